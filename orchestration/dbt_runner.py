"""`dbt build` in the run's own process (dbtRunner), reported to Dagster as materializations and
asset checks.

dagster-dbt's DbtCliResource starts a dbt process per step (interpreter, imports and a parse: most
of a refresh's time on small increments). Here dbt runs inside the Dagster step's process, with a
per-home target path so dbt's partial parsing stays valid between runs, and each model's and
test's result becomes a MaterializeResult / AssetCheckResult for the assets that @dbt_assets
declared from the same manifest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, MaterializeResult
from dagster_dbt import DagsterDbtTranslator, DbtProject
from dagster_dbt.asset_utils import get_asset_check_key_for_test

from engage.logs import log_event

logger = logging.getLogger("engage.dbt")
SUCCESS = {"success", "pass"}
# Not failures: a skipped node, and a test of severity `warn` that found rows (dbt passes the build).
NOT_FAILED = SUCCESS | {"skipped", "warn"}


class DbtBuildFailed(Exception):
    pass


def release_warehouse() -> None:
    """dbt-duckdb keeps its DuckDB connection open in a class attribute after a run; close it so
    another process (the next refresh, a rebuild) can open the warehouse file."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def invoke_dbt(project: DbtProject, args: list[str], target_path: Path, parsed_manifest=None):
    """Run one dbt command in this process; returns dbt's result object. With `parsed_manifest`
    (dbt's Manifest, parsed beforehand: orchestration/assets/dbt.py), dbt does not parse again."""
    from dbt.cli.main import dbtRunner

    target_path.mkdir(parents=True, exist_ok=True)
    cli_args = [
        *args,
        "--project-dir", str(project.project_dir),
        "--profiles-dir", str(project.profiles_dir),
        "--target-path", str(target_path),
        "--log-path", str(target_path / "logs"),
        "--quiet",
    ]
    try:
        return dbtRunner(manifest=parsed_manifest).invoke(cli_args)
    finally:
        release_warehouse()


def dbt_build_events(
    context: AssetExecutionContext,
    project: DbtProject,
    translator: DagsterDbtTranslator,
    args: list[str],
    target_path: Path,
    parsed_manifest=None,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    started = time.perf_counter()
    # dbt's --write-json would also rewrite the 0.8 MB manifest.json (0.5-1 s) that nothing reads:
    # only its record of the build is kept (run_results.json).
    result = invoke_dbt(project, [*args, "--no-write-json"], target_path, parsed_manifest)
    if result.exception is not None or result.result is None:
        raise DbtBuildFailed(f"dbt {' '.join(args)} could not run: {result.exception}")
    result.result.write(str(target_path / "run_results.json"))
    manifest = json.loads(project.manifest_path.read_text())
    selected_checks = context.selected_asset_check_keys
    failures = []
    counts = {"models": 0, "tests": 0}
    for node_result in result.result.results:
        node = node_result.node
        status = str(node_result.status)
        unique_id = node.unique_id
        if status not in NOT_FAILED:
            failures.append(f"{unique_id}: {status} {node_result.message or ''}".strip())
        if unique_id.startswith("model.") and status in SUCCESS:
            counts["models"] += 1
            props = manifest["nodes"].get(unique_id)
            if props is None:
                continue  # a model added since the manifest was parsed: picked up on reload
            yield MaterializeResult(
                asset_key=translator.get_asset_key(props),
                metadata={"dbt_status": status, "seconds": round(node_result.execution_time, 3),
                          "rows_affected": (node_result.adapter_response or {}).get("rows_affected", -1)},
            )
        elif unique_id.startswith("test.") and unique_id in manifest["nodes"]:
            counts["tests"] += 1
            check_key = get_asset_check_key_for_test(manifest, translator, unique_id, project)
            if check_key is None or check_key not in selected_checks:
                continue
            failed_rows = node_result.failures or 0
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=status == "pass",
                severity=AssetCheckSeverity.WARN if status == "warn" else AssetCheckSeverity.ERROR,
                metadata={"dbt_status": status, "failing_rows": failed_rows},
            )
    log_event(logger, "dbt_build_finished", models=counts["models"], tests=counts["tests"],
              failures=len(failures), seconds=round(time.perf_counter() - started, 2))
    if failures:
        raise DbtBuildFailed("dbt build failed, nothing will be published: " + "; ".join(failures[:10]))
