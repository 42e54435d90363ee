"""The loader as an asset: landing files → raw tables (events, quarantine, ledger)."""


from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from engage import refresh_status
from engage.loader import load_pending
from engage.locking import refresh_lock
from orchestration.resources import EngageResource

RAW_EVENTS = AssetKey(["raw", "user_events"])
RAW_QUARANTINE = AssetKey(["raw", "user_events_quarantine"])
RAW_LEDGER = AssetKey(["raw", "loaded_files"])


@multi_asset(
    specs=[
        AssetSpec(RAW_EVENTS, description="Every valid event loaded from the landing folder.", group_name="raw"),
        AssetSpec(RAW_QUARANTINE, description="Every rejected row, with source, line number, raw text and reason.", group_name="raw"),
        AssetSpec(RAW_LEDGER, description="One row per loaded file content (sha256): exactly-once loading.", group_name="raw"),
    ],
    name="load_landing_files",
    compute_kind="duckdb",
)
def load_landing_files(context: AssetExecutionContext, engage: EngageResource):
    """Load every pending landing file, each in one transaction with its ledger row."""
    settings = engage.settings()
    with refresh_lock(settings.refresh_lock_path, holder=f"run {context.run_id}"):
        refresh_status.record(settings, context.run_id, "running")
        summary = load_pending(settings)
    totals = summary.as_dict()
    context.log.info(" ".join(f"{k}={v}" for k, v in totals.items()))
    files_table = "\n".join(
        f"| {f.name} | {f.status} | {f.rows_loaded} | {f.rows_quarantined} |" for f in summary.files
    )
    yield MaterializeResult(
        asset_key=RAW_EVENTS,
        metadata={
            **totals,
            "files": MetadataValue.md("| file | status | loaded | quarantined |\n|---|---|---|---|\n" + files_table),
        },
    )
    yield MaterializeResult(asset_key=RAW_QUARANTINE, metadata={"rows_quarantined": summary.rows_quarantined})
    yield MaterializeResult(asset_key=RAW_LEDGER, metadata={"files_loaded": summary.files_loaded})
