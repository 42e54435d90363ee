"""The daily schedule: rebuild every mart from raw and run every test."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from orchestration.jobs import rebuild_job

daily_rebuild_schedule = ScheduleDefinition(
    name="daily_rebuild",
    job=rebuild_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="03:00 UTC: full rebuild of the marts from raw events, all dbt tests, publish.",
)
