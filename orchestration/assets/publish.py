"""Publishing: the marts become an immutable snapshot that the API reads."""

import os

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, asset

from engage import refresh_status
from engage.loader import connect_warehouse
from engage.locking import refresh_lock
from engage.snapshots import MARTS_SCHEMA, PUBLISHED_MARTS, publish
from orchestration.resources import EngageResource
from orchestration.run_worker import WARM_RUN_ENV

MART_KEYS = [AssetKey([MARTS_SCHEMA, mart]) for mart in PUBLISHED_MARTS]


@asset(deps=MART_KEYS, group_name="serving", compute_kind="duckdb")
def published_snapshot(context: AssetExecutionContext, engage: EngageResource) -> MaterializeResult:
    """Seal the marts file dbt built (snapshot_info, checkpoint, fsync, read back), rename it to
    snapshots/<id>.duckdb, then swap the CURRENT pointer."""
    settings = engage.settings()
    with refresh_lock(settings.refresh_lock_path, holder=f"run {context.run_id}"):
        con = connect_warehouse(settings)
        try:
            # A run in a warm run worker leaves the older snapshots to the spare that the launcher
            # starts after it (orchestration/run_worker.py): their removal is not part of the refresh.
            info = publish(con, settings, prune_old=os.environ.get(WARM_RUN_ENV) != context.run_id)
        finally:
            con.close()
    refresh_status.record(settings, context.run_id, "ok", snapshot_id=info["snapshot_id"])
    context.log.info(
        f"event=snapshot_published snapshot_id={info['snapshot_id']} watermark={info['watermark']} "
        f"raw_events={info['raw_event_count']} seconds={info['seconds']}"
    )
    return MaterializeResult(metadata={k: v for k, v in info.items() if k != "mart_rows"} | info["mart_rows"])
