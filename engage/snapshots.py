"""Published snapshots: immutable DuckDB files holding the marts that the API reads.

Publishing copies the dbt marts file (``marts.duckdb``, which only dbt writes) into
``snapshots/<id>.duckdb`` (written under a temporary name, fsynced, validated, renamed), then
atomically replaces the ``CURRENT`` pointer file. The API
only ever opens published files read-only, so it never waits on the pipeline's writer and never
sees a half-built mart. Older snapshots beyond ``snapshots_keep`` are removed (a reader that still
has one open keeps reading it: on POSIX an unlinked file lives until closed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from engage import faults

from engage.db import one
from engage.files import fsync_path, write_atomically

from engage.logs import log_event
from engage.settings import Settings

# The marts a snapshot holds (dbt models in the `marts` schema), the tables the API queries.
PUBLISHED_MARTS = (
    "session_metrics_hourly",
    "session_metrics_daily",
    "session_cube",
    "user_engagement_hourly",
    "user_engagement_daily",
    "active_users_hourly",
    "active_users_daily",
    "geographic_distribution_hourly",
    "geographic_distribution_daily",
    "engagement_cube",
    "activity_cube",
    "geo_cube",
    "geo_user_spans",
    "geo_day_sums",
    "event_user_spans",
    "event_day_sums",
    "event_type_bits",
    "user_event_types_daily",
)
MARTS_SCHEMA = "marts"
INFO_TABLE = "snapshot_info"
CURRENT_FILE = "CURRENT"
logger = logging.getLogger("engage.snapshots")


@dataclass(frozen=True)
class SnapshotRef:
    snapshot_id: str
    path: Path


class SnapshotProblem(Exception):
    """The CURRENT pointer or a snapshot file is missing or damaged; the message says which and how."""


def read_current(settings: Settings) -> SnapshotRef:
    """The snapshot that CURRENT names; SnapshotProblem if there is none or the pointer is damaged."""
    pointer = settings.snapshots_dir / CURRENT_FILE
    try:
        meta = json.loads(pointer.read_text())
        ref = SnapshotRef(str(meta["snapshot_id"]), settings.snapshots_dir / Path(str(meta["file"])).name)
    except FileNotFoundError:
        raise SnapshotProblem(f"no {CURRENT_FILE} pointer in {settings.snapshots_dir}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotProblem(f"the {CURRENT_FILE} pointer is damaged ({type(exc).__name__}); the next publish rewrites it") from None
    if not ref.path.exists():
        raise SnapshotProblem(f"{CURRENT_FILE} names {ref.path.name}, which does not exist; the next publish repairs it")
    return ref


def current_snapshot(settings: Settings) -> SnapshotRef | None:
    """The published snapshot named by CURRENT, or None (nothing published, or the pointer is damaged)."""
    try:
        return read_current(settings)
    except SnapshotProblem:
        return None


def kept_snapshots(settings: Settings) -> list[SnapshotRef]:
    """Every published snapshot file on disk, newest first (ids sort by time)."""
    files = sorted(settings.snapshots_dir.glob("*.duckdb"), reverse=True)
    return [SnapshotRef(f.stem, f) for f in files]


def check_snapshot(con: duckdb.DuckDBPyConnection, snapshot_id: str) -> dict[str, int]:
    """Rows of every published mart in an open snapshot; SnapshotProblem if a table is missing, the
    file ends before the blocks its tables use (truncated) or the snapshot is not `snapshot_id`.
    Reads only catalog and storage metadata and counts: cheap."""
    try:
        info = con.execute(f"SELECT snapshot_id FROM {INFO_TABLE}").fetchall()
        present = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
        missing = [m for m in PUBLISHED_MARTS if m not in present]
        if missing:
            raise SnapshotProblem(f"snapshot {snapshot_id} lacks the marts {', '.join(missing)}")
        rows = {m: con.execute(f"SELECT count(*) FROM {m}").fetchone()[0] for m in PUBLISHED_MARTS}
        last_block = con.execute("SELECT max(b) FROM (" + " UNION ALL ".join(
            f"SELECT max(block_id) AS b FROM pragma_storage_info('{t}')" for t in (*PUBLISHED_MARTS, INFO_TABLE)) + ")").fetchone()[0]
        path, block_size = con.execute(
            "SELECT d.path, s.block_size FROM duckdb_databases() d JOIN pragma_database_size() s USING (database_name) "
            "WHERE d.database_name = current_database()").fetchone()
        size = Path(path).stat().st_size
        if size < ((last_block or 0) + 1) * block_size:
            raise SnapshotProblem(f"snapshot {snapshot_id} cannot be read (its file is {size} bytes, but its "
                                  f"tables use block {last_block} of {block_size} bytes: truncated)")
    except duckdb.Error as exc:
        raise SnapshotProblem(f"snapshot {snapshot_id} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if info != [(snapshot_id,)]:
        raise SnapshotProblem(f"snapshot file {snapshot_id} holds snapshot {info[:1]}")
    return rows


def new_snapshot_id() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z"


def publish(warehouse: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Copy the marts file into a new immutable snapshot file and make it current. Returns its metadata.

    dbt writes the marts into their own DuckDB file (settings.marts_path), in the row order the API
    reads; a snapshot is a byte copy of that file plus ``snapshot_info``, so publishing costs a file
    copy, not a re-encoding of every mart."""
    started = time.perf_counter()
    settings.snapshots_dir.mkdir(parents=True, exist_ok=True)
    snapshot_id = new_snapshot_id()
    final = settings.snapshots_dir / f"{snapshot_id}.duckdb"
    tmp = settings.snapshots_dir / f".{snapshot_id}.duckdb.tmp"
    tmp.unlink(missing_ok=True)
    rows = _copy_marts(warehouse, settings.marts_path, tmp)
    watermark, raw_events = one(warehouse, "SELECT max(timestamp), count(*) FROM raw.user_events")
    with duckdb.connect(str(tmp)) as snap:
        snap.execute(
            f"CREATE TABLE {INFO_TABLE} AS SELECT ?::VARCHAR AS snapshot_id, ?::TIMESTAMP AS watermark, "
            "now()::TIMESTAMP AS published_at, ?::BIGINT AS raw_event_count",
            [snapshot_id, watermark, raw_events],
        )
    fsync_path(tmp)
    faults.damage("publish_damaged_write", tmp)
    _validate_written(tmp, snapshot_id, rows)
    os.replace(tmp, final)
    faults.point("publish_before_swap")
    write_atomically(
        settings.snapshots_dir / CURRENT_FILE,
        json.dumps({"snapshot_id": snapshot_id, "file": final.name}),
    )
    removed = prune(settings)
    info = {
        "snapshot_id": snapshot_id,
        "path": str(final),
        "watermark": watermark.strftime("%Y-%m-%d %H:%M:%S") if watermark else None,
        "raw_event_count": raw_events,
        "mart_rows": rows,
        "snapshots_removed": removed,
        "bytes": final.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log_event(logger, "snapshot_published", snapshot_id=snapshot_id, watermark=info["watermark"],
              raw_events=raw_events, mart_rows=sum(rows.values()), bytes=info["bytes"], seconds=info["seconds"])
    return info


def discard_marts(settings: Settings) -> None:
    """Delete the marts file before a full rebuild, which writes every mart again: DuckDB reuses the
    space of dropped tables but never shrinks its file, and a snapshot copies the whole file, so a
    rebuild over the old file would double every snapshot. Published snapshots are separate files:
    the API keeps serving. Should the rebuild fail, the next run builds the missing marts whole."""
    for path in (settings.marts_path, settings.marts_path.with_name(settings.marts_path.name + ".wal")):
        path.unlink(missing_ok=True)


def _copy_marts(warehouse: duckdb.DuckDBPyConnection, marts: Path, dest: Path) -> dict[str, int]:
    """Checkpoint the marts file (so that it holds everything: no write-ahead log), count the rows
    of every published mart, and copy the file to `dest`. Returns the row counts, which the
    validation of the copy compares against."""
    if not marts.exists():
        raise SnapshotProblem(f"no marts at {marts}: dbt has not built them yet (run `engage ingest`)")
    attached = one(warehouse, "SELECT count(*) FROM duckdb_databases() WHERE database_name = 'marts'")[0]
    if not attached:
        warehouse.execute(f"ATTACH '{marts}' AS marts")
    try:
        warehouse.execute("CHECKPOINT marts")
        rows = {mart: one(warehouse, f"SELECT count(*) FROM marts.main.{mart}")[0] for mart in PUBLISHED_MARTS}
    finally:
        if not attached:
            warehouse.execute("DETACH marts")
    wal = marts.with_name(marts.name + ".wal")
    if wal.exists() and wal.stat().st_size:
        raise SnapshotProblem(f"{wal} is not empty after a checkpoint; is another process writing the marts?")
    shutil.copyfile(marts, dest)
    return rows


def _validate_written(path: Path, snapshot_id: str, rows: dict[str, int]) -> None:
    """Read the written file back, as the API will, before anything points at it."""
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            found = check_snapshot(con, snapshot_id)
        if found != rows:
            raise SnapshotProblem(f"snapshot {snapshot_id} holds {found} rows, not the {rows} copied")
    except (SnapshotProblem, duckdb.Error) as exc:
        path.unlink(missing_ok=True)
        raise SnapshotProblem(f"the new snapshot failed validation and was not published: {exc}") from exc


def prune(settings: Settings) -> int:
    """Remove all but the newest ``snapshots_keep`` snapshot files (never the current one)."""
    current = current_snapshot(settings)
    files = sorted(settings.snapshots_dir.glob("*.duckdb"))
    keep = set(files[-settings.snapshots_keep :])
    if current:
        keep.add(current.path)
    removed = 0
    for f in files:
        if f not in keep:
            f.unlink(missing_ok=True)
            removed += 1
    for stale in settings.snapshots_dir.glob(".*.duckdb.tmp"):
        # A crashed publish leaves its temporary file; it was never current.
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    return removed
