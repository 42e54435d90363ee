"""Published snapshots: immutable DuckDB files holding the marts that the API reads.

dbt builds the marts in their own DuckDB file (``marts.duckdb``). Publishing seals that file (adds
``snapshot_info``, checkpoints, fsyncs, validates it read back) and renames it to
``snapshots/<id>.duckdb``, then atomically replaces the ``CURRENT`` pointer file: no copy of the
marts on the way to the API. The next incremental build needs the marts again: ``restore_marts``
copies the current snapshot back as ``marts.duckdb`` (the spare run worker does it ahead, between
runs; ``engage ingest`` right after publishing; a build that finds none does it first). The API
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
from engage.files import fsync_path, temporary_path, temporary_paths, write_atomically

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


def publish(warehouse: duckdb.DuckDBPyConnection, settings: Settings, prune_old: bool = True) -> dict:
    """Make the marts file that dbt built the new snapshot and make it current. Returns its metadata.
    `prune_old=False` leaves removing the snapshots beyond `snapshots_keep` to the spare run worker
    that follows the run (orchestration/run_worker.py, MartsKeeper): unlinking a 440 MB file takes
    ~0.1 s, which a refresh then does not wait for.

    dbt writes the marts into their own DuckDB file (settings.marts_path), in the row order the API
    reads; the snapshot is that very file, sealed and renamed: publishing writes no copy of the marts
    (a copy of the 440 MB file at 10 M events took 0.2-0.5 s of every refresh, more while the kernel
    wrote back dbt's writes)."""
    started = time.perf_counter()
    settings.snapshots_dir.mkdir(parents=True, exist_ok=True)
    snapshot_id = new_snapshot_id()
    final = settings.snapshots_dir / f"{snapshot_id}.duckdb"
    marts = settings.marts_path
    watermark, raw_events = one(warehouse, "SELECT max(timestamp), count(*) FROM raw.user_events")
    rows = _seal_marts(warehouse, marts, [snapshot_id, watermark, raw_events, _tested_through(warehouse)])
    fsync_path(marts)
    faults.damage("publish_damaged_write", marts)
    _validate_written(marts, snapshot_id, rows)
    os.replace(marts, final)
    fsync_path(settings.snapshots_dir)
    faults.point("publish_before_swap")
    write_atomically(
        settings.snapshots_dir / CURRENT_FILE,
        json.dumps({"snapshot_id": snapshot_id, "file": final.name}),
    )
    removed = prune(settings) if prune_old else 0
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


def restore_marts(settings: Settings) -> dict | None:
    """Give dbt its marts file back after a publish made it a snapshot: a copy of the current snapshot
    (the marts as last built and tested), under a temporary name, fsynced, then renamed. The caller
    holds the refresh lock. Nothing to do (None) when the marts file exists, or when nothing is
    published: dbt then builds the marts whole.

    The copy may be older than the last build (a publish that stopped between its rename and the
    CURRENT swap): the incremental models catch up from their own watermarks, which live in the
    copy, and the tests' scope (macros/tested_scope.sql) goes back to what the copy was tested
    through, so every row rebuilt now is tested again."""
    marts = settings.marts_path
    if marts.exists():
        return None
    source = current_snapshot(settings)
    if source is None:
        return None
    started = time.perf_counter()
    for leftover in (*temporary_paths(marts), _wal(marts)):
        leftover.unlink(missing_ok=True)  # of a restore that crashed; a log would be replayed on the copy
    tmp = temporary_path(marts)
    try:
        shutil.copyfile(source.path, tmp)
        fsync_path(tmp)
        with duckdb.connect(str(tmp), read_only=True) as con:
            tested = _snapshot_tested_through(con)
        os.replace(tmp, marts)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(marts.parent)
    with duckdb.connect(str(settings.warehouse_path)) as warehouse:
        _limit_tested_through(warehouse, tested)
    seconds = round(time.perf_counter() - started, 3)
    log_event(logger, "marts_restored", snapshot_id=source.snapshot_id, tested_through=tested,
              bytes=marts.stat().st_size, seconds=seconds)
    return {"snapshot_id": source.snapshot_id, "tested_through": tested, "seconds": seconds}


def restore_marts_quietly(settings: Settings) -> dict | None:
    """restore_marts, ahead of the next build; a failure is only logged: that build restores first."""
    try:
        return restore_marts(settings)
    except Exception as exc:
        log_event(logger, "marts_restore_failed", level=logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        return None


def discard_marts(settings: Settings) -> None:
    """Delete the marts file before a full rebuild, which writes every mart again: DuckDB reuses the
    space of dropped tables but never shrinks its file, and a snapshot is the whole file, so a
    rebuild over the old file would double every snapshot. Published snapshots are separate files:
    the API keeps serving. Should the rebuild fail, the next run builds the missing marts whole."""
    for path in (settings.marts_path, _wal(settings.marts_path)):
        path.unlink(missing_ok=True)


def _wal(database: Path) -> Path:
    """DuckDB's write-ahead log of a database file."""
    return database.with_name(database.name + ".wal")


# The warehouse's record of the newest raw batch whose rows passed dbt's tests (macros/tested_scope.sql).
TESTED_THROUGH_TABLE = "main.tested_through"


def _tested_through(warehouse: duckdb.DuckDBPyConnection) -> int | None:
    exists = one(warehouse, "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                            "AND schema_name = 'main' AND table_name = 'tested_through'")[0]
    return one(warehouse, f"SELECT max(batch_id) FROM {TESTED_THROUGH_TABLE}")[0] if exists else None


def _snapshot_tested_through(con: duckdb.DuckDBPyConnection) -> int | None:
    """The batch a snapshot's marts were tested through (None: not recorded, e.g. an older snapshot)."""
    columns = {r[0] for r in con.execute(
        f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{INFO_TABLE}'").fetchall()}
    if "tested_through_batch" not in columns:
        return None
    return con.execute(f"SELECT tested_through_batch FROM {INFO_TABLE}").fetchone()[0]


def _limit_tested_through(warehouse: duckdb.DuckDBPyConnection, tested: int | None) -> None:
    """After a restore: the rows newer than what the restored marts were tested through get tested
    by the next build (all of them, if that is unknown)."""
    if _tested_through(warehouse) is None:
        return  # no build has recorded anything yet
    if tested is None:
        warehouse.execute(f"DELETE FROM {TESTED_THROUGH_TABLE}")
    else:
        warehouse.execute(f"UPDATE {TESTED_THROUGH_TABLE} SET batch_id = least(batch_id, ?)", [tested])


def _seal_marts(warehouse: duckdb.DuckDBPyConnection, marts: Path, info: list) -> dict[str, int]:
    """Write `snapshot_info` (id, raw watermark, publication time, raw events, the batch its marts were
    tested through) into the marts file, checkpoint it (so that it holds everything: no write-ahead
    log) and count the rows of every published mart, which the validation of the written file
    compares against."""
    if not marts.exists():
        raise SnapshotProblem(f"no marts at {marts}: dbt has not built them yet (run `engage ingest`)")
    attached = one(warehouse, "SELECT count(*) FROM duckdb_databases() WHERE database_name = 'marts'")[0]
    if not attached:
        warehouse.execute(f"ATTACH '{marts}' AS marts")
    try:
        warehouse.execute(
            f"CREATE OR REPLACE TABLE marts.main.{INFO_TABLE} AS SELECT ?::VARCHAR AS snapshot_id, "
            "?::TIMESTAMP AS watermark, now()::TIMESTAMP AS published_at, ?::BIGINT AS raw_event_count, "
            "?::BIGINT AS tested_through_batch",
            info,
        )
        warehouse.execute("CHECKPOINT marts")
        rows = {mart: one(warehouse, f"SELECT count(*) FROM marts.main.{mart}")[0] for mart in PUBLISHED_MARTS}
    finally:
        if not attached:
            warehouse.execute("DETACH marts")
    wal = _wal(marts)
    if wal.exists() and wal.stat().st_size:
        raise SnapshotProblem(f"{wal} is not empty after a checkpoint; is another process writing the marts?")
    wal.unlink(missing_ok=True)
    return rows


def _validate_written(path: Path, snapshot_id: str, rows: dict[str, int]) -> None:
    """Read the written file back, as the API will, before anything points at it."""
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            found = check_snapshot(con, snapshot_id)
        if found != rows:
            raise SnapshotProblem(f"snapshot {snapshot_id} holds {found} rows, not the {rows} counted before")
    except (SnapshotProblem, duckdb.Error) as exc:
        # A marts file that does not read back is not built on either: the next build starts from
        # a copy of the current snapshot (restore_marts) and rebuilds what is newer.
        path.unlink(missing_ok=True)
        raise SnapshotProblem(f"the new snapshot failed validation and was not published: {exc}") from exc


def snapshots_to_prune(settings: Settings) -> list[Path]:
    """The snapshot files beyond the newest ``snapshots_keep`` (never the current one)."""
    current = current_snapshot(settings)
    files = sorted(settings.snapshots_dir.glob("*.duckdb"))
    keep = set(files[-settings.snapshots_keep :])
    if current:
        keep.add(current.path)
    return [f for f in files if f not in keep]


def prune(settings: Settings) -> int:
    """Remove all but the newest ``snapshots_keep`` snapshot files (never the current one)."""
    removed = 0
    for f in snapshots_to_prune(settings):
        f.unlink(missing_ok=True)
        removed += 1
    for stale in settings.snapshots_dir.glob(".*.duckdb.tmp"):
        # The temporary copy of a publish that crashed (before 2026-11-29 publishing copied the
        # marts file here); it was never current.
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    return removed
