"""Jobs: refresh (incremental, what the sensor launches) and rebuild (full, daily)."""

from __future__ import annotations

from dagster import AssetSelection, RunConfig, define_asset_job, in_process_executor

from orchestration.assets.dbt import DbtBuildConfig
from orchestration.hooks import record_refresh_failure

# Runs carrying this tag are limited to one at a time by the run queue (see engage/dev.py).
REFRESH_TAG = {"engage/refresh": "warehouse"}

refresh_job = define_asset_job(
    "refresh_job",
    # dbt still runs every test and a failing one fails the run (nothing is published); only the
    # per-test asset-check events are left out: 44 checks cost ~130 Dagster event writes, 3-5 s of
    # every refresh (docs/INGESTION.md, "Freshness"). rebuild_job reports them daily.
    selection=AssetSelection.all().without_checks(),
    description="Load new landing files, build the dbt marts incrementally (tests included) and publish a snapshot.",
    executor_def=in_process_executor,  # one process: no per-step start-up cost
    tags=REFRESH_TAG,
    hooks={record_refresh_failure},  # the failure is recorded for /ready
)

rebuild_job = define_asset_job(
    "rebuild_job",
    selection=AssetSelection.all(),
    description="Load pending files, rebuild every mart from raw (--full-refresh), test, publish.",
    executor_def=in_process_executor,
    tags=REFRESH_TAG,
    hooks={record_refresh_failure},  # the failure is recorded for /ready
    config=RunConfig(ops={"engage_dbt_models": DbtBuildConfig(full_refresh=True)}),
)
