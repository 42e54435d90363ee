"""The dbt project as assets (models) and asset checks (dbt tests)."""

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, Config
from dagster_dbt import DagsterDbtTranslator, dbt_assets

from engage import faults
from engage.locking import refresh_lock
from engage.logs import logfmt
from engage.settings import Settings
from engage.snapshots import discard_marts, restore_marts
from orchestration.dbt_runner import dbt_build_events, invoke_dbt
from orchestration.resources import EngageResource, build_dbt_project, newest_dbt_source_mtime

dbt_project = build_dbt_project()
# What dbt's profile reads from the environment (dbt_project/profiles.yml, set by EngageResource).
PROFILE_ENV = ("ENGAGE_WAREHOUSE_PATH", "ENGAGE_MARTS_PATH", "ENGAGE_PIPELINE_MEMORY_LIMIT")


def dbt_target(settings: Settings) -> Path:
    """dbt's target (partial-parse state, run results, logs), per ENGAGE_HOME: its profile differs per home."""
    return settings.state_dir / "dbt_target"


@dataclass
class ParsedAhead:
    manifest: Any  # dbt's Manifest
    parse_started: float
    profile_env: dict[str, str | None]


_parsed_ahead: ParsedAhead | None = None


def parse_ahead(settings: Settings) -> float:
    """Parse the dbt project now for this process's next `dbt build`, which then skips its own
    parse (1-3 s of a refresh): what a warm run worker does while it waits for a run
    (orchestration/warm_launcher.py). dbt starts from a copy of the home's partial-parse state, in
    a folder of its own, so a refresh running meanwhile is not disturbed. Returns the seconds taken."""
    global _parsed_ahead
    started = time.time()
    # One spare at a time per home: a fixed folder, so that a spare killed meanwhile leaves no litter.
    folder = settings.state_dir / "dbt_parse_ahead"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        try:
            shutil.copy(dbt_target(settings) / "partial_parse.msgpack", folder)
        except FileNotFoundError:
            pass  # a full parse
        result = invoke_dbt(dbt_project, ["parse", "--no-write-json"], folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not result.success:
        raise RuntimeError(f"dbt parse failed: {result.exception}")
    _parsed_ahead = ParsedAhead(result.result, started, {k: os.environ.get(k) for k in PROFILE_ENV})
    return time.time() - started


def take_parsed_ahead(args: list[str]):
    """The manifest parsed ahead (once), if it holds for this build: no --vars (they change what dbt
    parses), the same profile environment, and no dbt source changed since the parse began."""
    global _parsed_ahead
    parsed, _parsed_ahead = _parsed_ahead, None
    if parsed is None or "--vars" in args:
        return None
    if parsed.profile_env != {k: os.environ.get(k) for k in PROFILE_ENV}:
        return None
    if newest_dbt_source_mtime(Path(dbt_project.project_dir)) > parsed.parse_started:
        return None
    return parsed.manifest


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
    target = dbt_target(settings)
    with refresh_lock(settings.refresh_lock_path, holder=f"run {context.run_id}"):
        faults.point("dbt_before_build")
        if config.full_refresh:
            discard_marts(settings)  # rebuilt whole: a compact file in row order (engage/snapshots.py)
        elif restored := restore_marts(settings):  # the last publish made the marts file a snapshot
            context.log.info(logfmt("marts_restored", **restored))
        parsed = take_parsed_ahead(args)
        context.log.info(logfmt("dbt_build_started", args=" ".join(args), parsed_ahead=parsed is not None))
        yield from dbt_build_events(context, dbt_project, translator, args, target, parsed)
