"""Jobs: refresh (incremental, what the sensor launches) and rebuild (full, daily)."""

from __future__ import annotations

from dagster import AssetSelection, RunConfig, define_asset_job, in_process_executor

from orchestration.assets.dbt import DbtBuildConfig

# Runs carrying this tag are limited to one at a time by the run queue (see engage/dev.py).
REFRESH_TAG = {"engage/refresh": "warehouse"}

refresh_job = define_asset_job(
    "refresh_job",
    selection=AssetSelection.all(),
    description="Load new landing files, build the dbt marts incrementally and publish a snapshot.",
    executor_def=in_process_executor,  # one process: no per-step start-up cost
    tags=REFRESH_TAG,
)

rebuild_job = define_asset_job(
    "rebuild_job",
    selection=AssetSelection.all(),
    description="Load pending files, rebuild every mart from raw (--full-refresh), test, publish.",
    executor_def=in_process_executor,
    tags=REFRESH_TAG,
    config=RunConfig(ops={"engage_dbt_models": DbtBuildConfig(full_refresh=True)}),
)
