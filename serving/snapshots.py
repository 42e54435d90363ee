"""Access to the published snapshot (engage/snapshots.py publishes; we only read).

* The CURRENT pointer is checked at most every ``check_interval`` seconds (a cheap ``stat``); when it
  names a new file, that file is opened read-only and becomes current. A snapshot that cannot be
  opened is logged and the previous one keeps serving.
* One DuckDB connection per snapshot file; each request takes ONE cursor (``con.cursor()``) for
  its whole life, so every response comes from exactly one snapshot, even if CURRENT moves on
  meanwhile. A replaced snapshot's connection is closed when its last request finishes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

import duckdb

from engage.settings import Settings
from engage.snapshots import CURRENT_FILE, INFO_TABLE, current_snapshot

log = logging.getLogger("engage.serving.snapshots")


class SnapshotUnavailable(Exception):
    """No published snapshot can be read (nothing published yet, or unreadable)."""


@dataclass(eq=False)
class _Entry:
    snapshot_id: str
    path: Path
    con: duckdb.DuckDBPyConnection
    watermark: datetime | None
    published_at: datetime | None
    users: int = 0
    retired: bool = False


@dataclass(frozen=True)
class Snapshot:
    """The snapshot a request reads, with its own cursor."""

    snapshot_id: str
    watermark: datetime | None
    published_at: datetime | None
    cursor: duckdb.DuckDBPyConnection = field(repr=False)

    @property
    def watermark_text(self) -> str:
        return format_watermark(self.watermark)


def format_watermark(w: datetime | None) -> str:
    return w.replace(microsecond=0).isoformat(" ") if w is not None else ""


class SnapshotManager:
    def __init__(self, settings: Settings, check_interval: float = 0.5):
        self.settings = settings
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._current: _Entry | None = None
        self._checked_at = float("-inf")
        self._pointer_sig: tuple | None = None
        self._reason = "no snapshot has been published yet"

    # -- internals (under self._lock) --------------------------------------------------------

    def _pointer_signature(self) -> tuple | None:
        try:
            st = os.stat(self.settings.snapshots_dir / CURRENT_FILE)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        sig = self._pointer_signature()
        if sig is not None and sig == self._pointer_sig:
            return
        ref = current_snapshot(self.settings)
        if ref is None:
            # Nothing published (or the pointer names a missing file): keep serving what we have.
            if self._current is None:
                self._reason = "no snapshot has been published yet: run `engage ingest` (or wait for the pipeline)"
            return
        if self._current is not None and self._current.path == ref.path:
            self._pointer_sig = sig
            return
        try:
            entry = self._open(ref.snapshot_id, ref.path)
        except Exception as exc:  # a damaged or vanished file: keep the previous snapshot
            log.error("cannot open snapshot %s (%s): %s", ref.snapshot_id, ref.path, exc)
            if self._current is None:
                self._reason = f"the published snapshot {ref.snapshot_id} cannot be read"
            return
        self._pointer_sig = sig
        old, self._current = self._current, entry
        log.info("serving snapshot %s (watermark %s)", entry.snapshot_id, format_watermark(entry.watermark))
        if old is not None:
            old.retired = True
            self._maybe_close(old)

    def _open(self, snapshot_id: str, path: Path) -> _Entry:
        con = duckdb.connect(str(path), read_only=True)
        try:
            row = con.execute(f"SELECT watermark, published_at FROM {INFO_TABLE} LIMIT 1").fetchone()
        except Exception:
            con.close()
            raise
        watermark, published_at = row if row else (None, None)
        return _Entry(snapshot_id, path, con, watermark, published_at)

    @staticmethod
    def _maybe_close(entry: _Entry) -> None:
        if entry.retired and entry.users == 0:
            try:
                entry.con.close()
            except Exception:  # pragma: no cover - closing is best effort
                log.warning("closing snapshot %s failed", entry.snapshot_id, exc_info=True)

    # -- public ------------------------------------------------------------------------------

    @contextmanager
    def acquire(self) -> Iterator[Snapshot]:
        """The current snapshot with a cursor of its own, for one request."""
        with self._lock:
            self._refresh()
            entry = self._current
            if entry is None:
                raise SnapshotUnavailable(self._reason)
            cursor = entry.con.cursor()
            entry.users += 1
        try:
            yield Snapshot(entry.snapshot_id, entry.watermark, entry.published_at, cursor)
        finally:
            try:
                cursor.close()
            finally:
                with self._lock:
                    entry.users -= 1
                    self._maybe_close(entry)

    def peek(self) -> tuple[str, str] | None:
        """(snapshot id, watermark text) of the current snapshot, or None; never raises."""
        try:
            with self._lock:
                self._refresh()
                entry = self._current
                return (entry.snapshot_id, format_watermark(entry.watermark)) if entry else None
        except Exception:  # pragma: no cover - headers are best effort
            log.warning("snapshot peek failed", exc_info=True)
            return None

    def close(self) -> None:
        with self._lock:
            entry, self._current = self._current, None
            self._pointer_sig = None
            self._checked_at = float("-inf")
            if entry is not None:
                entry.retired = True
                self._maybe_close(entry)
