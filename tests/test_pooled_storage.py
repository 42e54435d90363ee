"""The run worker's Dagster storage (orchestration/pooled_storage.py): Dagster's SQLite storage with the
index database's connection kept open. What Dagster and its UI read must not change: the same runs,
materializations and data versions, seen by a plain instance on the same folder; a run's events
reach its database file as they are written (the UI follows a run through a file watcher on it).
Real Dagster instances on real files, real in-process job runs."""

from __future__ import annotations

import threading
import time

import pytest
from dagster import (
    AssetKey,
    AssetSpec,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    define_asset_job,
    multi_asset,
)
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData
from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestration.pooled_storage import PooledSqliteEventLogStorage, open_pooled_instance, with_pooled_sqlite_storage

ASSETS = [f"model_{i}" for i in range(8)]


@multi_asset(specs=[AssetSpec(name, deps=[ASSETS[i - 1]] if i else []) for i, name in enumerate(ASSETS)])
def chain_of_models():
    """Eight assets in one step, each on the previous one, as dbt's models are in the refresh's step."""
    for name in ASSETS:
        yield MaterializeResult(asset_key=name, metadata={"rows": len(name)})


chain_job = define_asset_job("chain_job")
defs = Definitions(assets=[chain_of_models], jobs=[chain_job])


def pooled_instance(dagster_home) -> DagsterInstance:
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return open_pooled_instance(str(dagster_home))


@pytest.fixture
def sqlite_connections():
    """Every SQLite connection this process opens, by database file name."""
    opened: list[str] = []

    def on_connect(dbapi_connection, _record):
        opened.append(dbapi_connection.execute("pragma database_list").fetchone()[2].rsplit("/", 1)[-1])

    event.listen(Engine, "connect", on_connect)
    yield opened
    event.remove(Engine, "connect", on_connect)


def test_only_dagsters_default_sqlite_storage_is_swapped(tmp_path):
    ref = InstanceRef.from_dir(str(tmp_path))
    pooled = with_pooled_sqlite_storage(ref)
    assert pooled.storage_data.class_name == "PooledSqliteStorage"
    assert pooled.storage_data.config_yaml == ref.storage_data.config_yaml  # the same folder
    assert pooled._replace(storage_data=ref.storage_data) == ref  # nothing else changed

    other = ref._replace(storage_data=ConfigurableClassData("dagster_postgres", "DagsterPostgresStorage", "{}"))
    assert with_pooled_sqlite_storage(other) is other


def test_runs_read_the_same_to_dagster_and_share_one_connection_to_the_index(tmp_path, sqlite_connections):
    home = tmp_path / "dagster"
    home.mkdir()
    job = defs.resolve_job_def("chain_job")
    with pooled_instance(home) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        job.execute_in_process(instance=instance)  # creates the index database
        sqlite_connections.clear()
        run = job.execute_in_process(instance=instance)
    assert run.success
    # The second run: 8 materializations and a data-version read for each model after the first,
    # each a new index connection in Dagster's own storage; here the one the first run opened.
    assert sqlite_connections.count("index.db") == 0, sqlite_connections

    with DagsterInstance.from_config(str(home)) as plain:  # Dagster's own storage, the same files
        sqlite_connections.clear()
        plain_run = job.execute_in_process(instance=plain)
        assert sqlite_connections.count("index.db") >= len(ASSETS), "Dagster's storage reconnects per use"
        for run_id in (run.run_id, plain_run.run_id):
            records = plain.get_records_for_run(run_id).records
            assert sum(r.event_log_entry.dagster_event_type == "ASSET_MATERIALIZATION" for r in records) == len(ASSETS)
        for name in ASSETS:
            latest = plain.get_latest_materialization_event(AssetKey(name))
            assert latest.run_id == plain_run.run_id
            assert latest.asset_materialization.metadata["rows"].value == len(name)
        # The pooled run recorded the same provenance: each model's input data version is the
        # data version its parent got in that run.
        by_key = {}
        for record in plain.get_records_for_run(run.run_id).records:
            if record.event_log_entry.dagster_event_type == "ASSET_MATERIALIZATION":
                materialization = record.event_log_entry.asset_materialization
                by_key[materialization.asset_key.path[-1]] = materialization.tags
        for parent, child in zip(ASSETS, ASSETS[1:]):
            assert by_key[child][f"dagster/input_data_version/{parent}"] == by_key[parent]["dagster/data_version"]


def test_a_runs_events_reach_its_database_file_as_they_are_written(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    job = defs.resolve_job_def("chain_job")
    with pooled_instance(home) as instance:
        run = instance.create_run_for_job(job)
        seen: list[str] = []
        arrived = threading.Event()

        def on_event(entry, _cursor):
            if entry.dagster_event.event_type_value == "ENGINE_EVENT":  # not the planned materializations
                seen.append(entry.dagster_event.message)
            if len(seen) == 3:
                arrived.set()

        instance.event_log_storage.watch(run.run_id, None, on_event)  # what the UI does for a live run
        try:
            for i in range(3):
                instance.report_engine_event(f"step {i}", run)
                time.sleep(0.05)
            assert arrived.wait(10), f"the file watcher saw {seen}"
        finally:
            instance.event_log_storage.end_watch(run.run_id, on_event)
    assert seen == ["step 0", "step 1", "step 2"]
