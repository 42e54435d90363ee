"""Access to the published snapshot (engage/snapshots.py publishes; we only read).

* The CURRENT pointer is checked at most every ``check_interval`` seconds (a cheap ``stat``); when it
  names a new file, that file is opened read-only, checked (every mart present, counted) and becomes
  current. A pointer or snapshot that cannot be read is logged, kept as a ``problem`` for /ready,
  and the snapshot already open keeps serving; with none open (start-up), the newest readable
  snapshot on disk serves. While one is open, nothing is retried until CURRENT changes (the next
  publish repairs); while none is, every check retries.
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
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Hashable, Iterator, TypeVar

import duckdb

from engage.settings import Settings
from engage.snapshots import CURRENT_FILE, INFO_TABLE, SnapshotProblem, SnapshotRef, check_snapshot, kept_snapshots, read_current

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
    file_sig: tuple | None = None  # the file as opened; a published snapshot never changes
    users: int = 0
    retired: bool = False
    facts: dict = field(default_factory=dict)  # see snapshot_fact()


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


# The facts of the snapshot the current request reads (set by SnapshotManager.acquire).
_FACTS: ContextVar[dict | None] = ContextVar("engage_snapshot_facts", default=None)
_COMPUTING = threading.Lock()
T = TypeVar("T")


def snapshot_fact(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()`` once per snapshot: for a value a query derives from the snapshot alone (a
    published snapshot never changes), such as the days its data spans or a cube held in memory.
    The value is shared by every request on the snapshot this request reads, and dropped with it;
    requests arriving while it is computed wait for it. Outside a request, computed for the call.
    An exception is not remembered. The value must not be changed by its users."""
    facts = _FACTS.get()
    if facts is None:
        return compute()
    if key not in facts:
        with _COMPUTING:
            if key not in facts:
                facts[key] = compute()
    return facts[key]


def format_watermark(w: datetime | None) -> str:
    return w.replace(microsecond=0).isoformat(" ") if w is not None else ""


class SnapshotManager:
    def __init__(self, settings: Settings, check_interval: float = 0.5):
        self.settings = settings
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._current: _Entry | None = None
        self._checked_at = float("-inf")
        self._pointer_sig: tuple | None | str = "never read"
        self._reason = "no snapshot has been published yet"
        self._problem: str | None = None

    # -- internals (under self._lock) --------------------------------------------------------

    @staticmethod
    def _file_signature(path: Path) -> tuple | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _damaged(self) -> bool:
        """The open snapshot's file was changed in place (truncated, overwritten): its reads may fail.
        (A removed file is fine: the open handle keeps reading it.)"""
        sig = self._file_signature(self._current.path) if self._current else None
        return sig is not None and sig != self._current.file_sig

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        damaged = self._damaged()
        sig = self._file_signature(self.settings.snapshots_dir / CURRENT_FILE)
        if sig == self._pointer_sig and self._current is not None and not damaged:
            return
        self._pointer_sig = sig
        try:
            ref = read_current(self.settings)
            if self._current is not None and self._current.path == ref.path:
                if damaged:
                    raise SnapshotProblem(f"the file of snapshot {ref.snapshot_id} changed on disk after it was "
                                          "published (snapshot files never change: damaged?)")
                self._problem = None
                return
            entry = self._open(ref)
            self._problem = None
        except SnapshotProblem as exc:
            entry, problem = None, str(exc)
            if sig is None and self._current is None and not kept_snapshots(self.settings):
                self._reason = "no snapshot has been published yet: run `engage ingest` (or wait for the pipeline)"
                return
            unreadable: list[str] = []
            if self._current is None or damaged:
                entry = self._fallback(self._current.path if damaged else None, unreadable)
            serving = entry or self._current
            previous, self._problem = self._problem, problem + (f"; serving snapshot {serving.snapshot_id}" if serving else "")
            self._reason = "; ".join(dict.fromkeys([problem, *unreadable]))
            if self._problem != previous:  # once, not at every check
                log.error("snapshot problem: %s", "; ".join(dict.fromkeys([self._problem, *unreadable])))
            if entry is None:
                return
        old, self._current = self._current, entry
        log.info("serving snapshot %s (watermark %s)", entry.snapshot_id, format_watermark(entry.watermark))
        if old is not None:
            old.retired = True
            self._maybe_close(old)

    def _fallback(self, avoid: Path | None, unreadable: list[str]) -> _Entry | None:
        """The newest readable snapshot on disk (CURRENT is damaged and none is open, or the open
        one is); what could not be read is added to `unreadable`."""
        for ref in kept_snapshots(self.settings):
            if ref.path == avoid:
                continue
            try:
                return self._open(ref)
            except SnapshotProblem as exc:
                unreadable.append(str(exc))
        return None

    def _open(self, ref: SnapshotRef) -> _Entry:
        file_sig = self._file_signature(ref.path)
        try:
            con = duckdb.connect(str(ref.path), read_only=True)
        except duckdb.Error as exc:
            raise SnapshotProblem(f"snapshot {ref.snapshot_id} cannot be read ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]})") from None
        try:
            check_snapshot(con, ref.snapshot_id)
            watermark, published_at = con.execute(f"SELECT watermark, published_at FROM {INFO_TABLE}").fetchone()
        except BaseException:
            con.close()
            raise
        return _Entry(ref.snapshot_id, ref.path, con, watermark, published_at, file_sig)

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
        facts = _FACTS.set(entry.facts)
        try:
            yield Snapshot(entry.snapshot_id, entry.watermark, entry.published_at, cursor)
        finally:
            _FACTS.reset(facts)
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

    def problems(self) -> list[str]:
        """What is wrong with the snapshots, in words (empty when CURRENT is open and on disk)."""
        with self._lock:
            self._refresh()
            problems = [self._problem] if self._problem else []
            entry = self._current
        if entry is not None and not entry.path.exists():
            problems.append(f"the file of the snapshot being served ({entry.path.name}) was removed from disk; "
                            "it serves from the open file until the next publish")
        return problems

    def close(self) -> None:
        with self._lock:
            entry, self._current = self._current, None
            self._pointer_sig = "never read"
            self._checked_at = float("-inf")
            if entry is not None:
                entry.retired = True
                self._maybe_close(entry)
