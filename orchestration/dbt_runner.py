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
import queue
import threading
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


def invoke_dbt(project: DbtProject, args: list[str], target_path: Path, parsed_manifest=None, callbacks=()):
    """Run one dbt command in this process; returns dbt's result object. With `parsed_manifest`
    (dbt's Manifest, parsed beforehand: orchestration/assets/dbt.py), dbt does not parse again.
    `callbacks` get each of dbt's events, in dbt's threads."""
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
        return dbtRunner(manifest=parsed_manifest, callbacks=list(callbacks)).invoke(cli_args)
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
    """Run dbt in a thread and report each node to Dagster as it finishes (as dagster-dbt streams its
    events), so that writing Dagster's events (two per model, ~15 ms: 0.3 s of a refresh) overlaps
    the build instead of following it. Raises DbtBuildFailed naming the failed nodes at the end."""
    started = time.perf_counter()
    manifest = json.loads(project.manifest_path.read_text())
    finished: queue.Queue = queue.Queue()
    outcome: dict = {}

    def on_event(event) -> None:  # in dbt's threads
        if event.info.name == "NodeFinished":
            data = event.data
            finished.put((data.node_info.unique_id, data.run_result.status,
                          data.run_result.execution_time, data.run_result.num_failures))

    def build() -> None:
        try:
            # dbt's --write-json would also rewrite the 0.8 MB manifest.json (0.5-1 s) that nothing
            # reads: only its record of the build is kept (run_results.json).
            outcome["result"] = invoke_dbt(project, [*args, "--no-write-json"], target_path, parsed_manifest,
                                           callbacks=[on_event])
        except BaseException as exc:  # re-raised in the step's thread
            outcome["error"] = exc
        finally:
            finished.put(None)

    builder = threading.Thread(target=build, name="dbt-build", daemon=True)
    builder.start()
    reported: set[str] = set()
    counts = {"models": 0, "tests": 0}
    try:
        while (node := finished.get()) is not None:
            reported.add(node[0])
            yield from _node_events(context, project, translator, manifest, counts, *node)
    finally:
        # Also when the run is terminated (an interrupt reaches only this thread): dbt finishes its
        # build before the step gives the refresh lock back, as when dbt ran in this thread.
        builder.join()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    if result.exception is not None or result.result is None:
        raise DbtBuildFailed(f"dbt {' '.join(args)} could not run: {result.exception}")
    result.result.write(str(target_path / "run_results.json"))
    failures = []
    for node_result in result.result.results:
        unique_id, status = node_result.node.unique_id, str(node_result.status)
        if status not in NOT_FAILED:
            failures.append(f"{unique_id}: {status} {node_result.message or ''}".strip())
        if unique_id not in reported:  # a node dbt skipped sends no NodeFinished
            yield from _node_events(context, project, translator, manifest, counts, unique_id, status,
                                    node_result.execution_time, node_result.failures)
    log_event(logger, "dbt_build_finished", models=counts["models"], tests=counts["tests"],
              failures=len(failures), seconds=round(time.perf_counter() - started, 2))
    if failures:
        raise DbtBuildFailed("dbt build failed, nothing will be published: " + "; ".join(failures[:10]))


def _node_events(context: AssetExecutionContext, project: DbtProject, translator: DagsterDbtTranslator,
                 manifest: dict, counts: dict[str, int], unique_id: str, status: str, seconds: float,
                 failed_rows: int | None) -> Iterator[MaterializeResult | AssetCheckResult]:
    """A model's materialization, or a test's asset-check result (when the run selected that check)."""
    status = str(status)
    if unique_id.startswith("model.") and status in SUCCESS:
        counts["models"] += 1
        props = manifest["nodes"].get(unique_id)
        if props is None:
            return  # a model added since the manifest was parsed: picked up on reload
        yield MaterializeResult(asset_key=translator.get_asset_key(props),
                                metadata={"dbt_status": status, "seconds": round(seconds, 3)})
    elif unique_id.startswith("test.") and unique_id in manifest["nodes"]:
        counts["tests"] += 1
        check_key = get_asset_check_key_for_test(manifest, translator, unique_id, project)
        if check_key is None or check_key not in context.selected_asset_check_keys:
            return
        yield AssetCheckResult(
            asset_key=check_key.asset_key,
            check_name=check_key.name,
            passed=status == "pass",
            severity=AssetCheckSeverity.WARN if status == "warn" else AssetCheckSeverity.ERROR,
            metadata={"dbt_status": status, "failing_rows": failed_rows or 0},
        )
