"""The dbt project as assets (models) and asset checks (dbt tests)."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, AssetKey, Config
from dagster_dbt import DagsterDbtTranslator, dbt_assets

from engage import faults
from engage.locking import refresh_lock
from engage.snapshots import discard_marts
from orchestration.dbt_runner import dbt_build_events
from orchestration.resources import EngageResource, build_dbt_project

dbt_project = build_dbt_project()


class EngageDbtTranslator(DagsterDbtTranslator):
    """Models are keyed by their schema (layer) and name: ["marts", "session_metrics_hourly"].
    Sources keep dagster-dbt's [source, table] keys, which are the loader's asset keys."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return AssetKey([dbt_resource_props["config"]["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_resource_props["config"].get("schema") or "dbt"


translator = EngageDbtTranslator()


class DbtBuildConfig(Config):
    full_refresh: bool = False  # the daily schedule rebuilds every model from raw


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, dagster_dbt_translator=translator)
def engage_dbt_models(context: AssetExecutionContext, engage: EngageResource, config: DbtBuildConfig):
    """`dbt build` (in this process): incremental models and their tests; a failing test fails the
    run, so the snapshot built on it is never published."""
    settings = engage.settings()
    args = ["build", "--full-refresh"] if config.full_refresh else ["build"]
    # dbt's target (partial-parse state, logs) per ENGAGE_HOME: its profile differs per home.
    target = settings.state_dir / "dbt_target"
    with refresh_lock(settings.refresh_lock_path, holder=f"run {context.run_id}"):
        faults.point("dbt_before_build")
        if config.full_refresh:
            discard_marts(settings)  # rebuilt whole: a compact file in row order (engage/snapshots.py)
        yield from dbt_build_events(context, dbt_project, translator, args, target)
