"""The Definitions of engage, assembled in one place."""

from __future__ import annotations

from dagster import Definitions

from orchestration.assets.dbt import engage_dbt_models
from orchestration.assets.ingest import load_landing_files
from orchestration.assets.publish import published_snapshot
from orchestration.jobs import rebuild_job, refresh_job
from orchestration.resources import build_engage_resource
from orchestration.schedules import daily_rebuild_schedule
from orchestration.sensors import landing_sensor

defs = Definitions(
    assets=[load_landing_files, engage_dbt_models, published_snapshot],
    jobs=[refresh_job, rebuild_job],
    sensors=[landing_sensor],
    schedules=[daily_rebuild_schedule],
    resources={
        "engage": build_engage_resource(),
    },
)
