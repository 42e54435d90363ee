"""Published snapshots: immutable DuckDB files holding the marts that the API reads.

Publishing copies the dbt marts out of the warehouse into ``snapshots/<id>.duckdb`` (written under
a temporary name, fsynced, renamed), then atomically replaces the ``CURRENT`` pointer file. The API
only ever opens published files read-only, so it never waits on the pipeline's writer and never
sees a half-built mart. Older snapshots beyond ``snapshots_keep`` are removed (a reader that still
has one open keeps reading it: on POSIX an unlinked file lives until closed).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from engage import faults

from engage.db import one

from engage.settings import Settings

# The marts a snapshot holds (dbt models in the `marts` schema), the tables the API queries.
PUBLISHED_MARTS = (
    "session_metrics_hourly",
    "session_metrics_daily",
    "user_engagement_hourly",
    "user_engagement_daily",
    "active_users_hourly",
    "active_users_daily",
    "geographic_distribution_hourly",
    "geographic_distribution_daily",
    "engagement_cube",
    "activity_cube",
    "geo_user_spans",
    "geo_day_sums",
    "event_user_spans",
    "event_day_sums",
)
# Row order of a published mart (zone maps skip what a query does not need): by period, except the
# bucket cubes, which the API reads by (grain, filter) and then a period range.
PUBLISH_ORDER = {
    "engagement_cube": "grain, filter_dim, filter_value, period_start",
    "activity_cube": "grain, filter_dim, filter_value, platform, period_start",
    "geo_user_spans": "filter_dim, filter_value, country, region, city, user_key",
    "event_user_spans": "filter_dim, filter_value, event_type, user_key",
    "geo_day_sums": "filter_dim, filter_value, period_start",
    "event_day_sums": "filter_dim, filter_value, period_start",
}
MARTS_SCHEMA = "marts"
INFO_TABLE = "snapshot_info"
CURRENT_FILE = "CURRENT"


@dataclass(frozen=True)
class SnapshotRef:
    snapshot_id: str
    path: Path


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def current_snapshot(settings: Settings) -> SnapshotRef | None:
    """The published snapshot named by CURRENT, or None before the first publish."""
    pointer = settings.snapshots_dir / CURRENT_FILE
    try:
        meta = json.loads(pointer.read_text())
    except (FileNotFoundError, ValueError):
        return None
    path = settings.snapshots_dir / meta["file"]
    return SnapshotRef(meta["snapshot_id"], path) if path.exists() else None


def new_snapshot_id() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z"


def publish(warehouse: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Copy the marts into a new immutable snapshot file and make it current. Returns its metadata."""
    started = time.perf_counter()
    settings.snapshots_dir.mkdir(parents=True, exist_ok=True)
    snapshot_id = new_snapshot_id()
    final = settings.snapshots_dir / f"{snapshot_id}.duckdb"
    tmp = settings.snapshots_dir / f".{snapshot_id}.duckdb.tmp"
    tmp.unlink(missing_ok=True)
    warehouse.execute(f"ATTACH '{tmp}' AS snap")
    try:
        rows = {}
        for mart in PUBLISHED_MARTS:
            warehouse.execute(
                f"CREATE TABLE snap.{mart} AS SELECT * FROM {MARTS_SCHEMA}.{mart} "
                f"ORDER BY {PUBLISH_ORDER.get(mart, 'period_start')}"
            )
            rows[mart] = one(warehouse, f"SELECT count(*) FROM snap.{mart}")[0]
        watermark, raw_events = one(warehouse, 
            "SELECT max(timestamp), count(*) FROM raw.user_events"
        )
        warehouse.execute(
            f"CREATE TABLE snap.{INFO_TABLE} AS SELECT ?::VARCHAR AS snapshot_id, ?::TIMESTAMP AS watermark, "
            "now()::TIMESTAMP AS published_at, ?::BIGINT AS raw_event_count",
            [snapshot_id, watermark, raw_events],
        )
    finally:
        warehouse.execute("DETACH snap")
    _fsync_path(tmp)
    os.replace(tmp, final)
    faults.point("publish_before_swap")
    _write_atomically(
        settings.snapshots_dir / CURRENT_FILE,
        json.dumps({"snapshot_id": snapshot_id, "file": final.name}),
    )
    removed = prune(settings)
    return {
        "snapshot_id": snapshot_id,
        "path": str(final),
        "watermark": watermark.strftime("%Y-%m-%d %H:%M:%S") if watermark else None,
        "raw_event_count": raw_events,
        "mart_rows": rows,
        "snapshots_removed": removed,
        "seconds": round(time.perf_counter() - started, 3),
    }


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
