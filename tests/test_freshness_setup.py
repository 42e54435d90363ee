"""What keeps a posted event's path to the pipes short (docs/INGESTION.md, "Freshness"): the Dagster
instance config, no `dbt parse` per run worker, no per-test asset-check events in refreshes, and
runs launched by the real Dagster daemon in a warm run worker. Real files, real Dagster processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from edge_data import edge_case_events, write_ndjson

from engage.dagster_home import DAGSTER_YAML, EARLIER_DAGSTER_YAMLS, ensure_dagster_home, write_dagster_yaml
from engage.settings import Settings
from engage.snapshots import current_snapshot

PROJECT_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_dagster_yaml_is_written_upgraded_from_an_earlier_version_and_kept_when_edited(tmp_path, caplog):
    from dagster import DagsterInstance

    from orchestration.warm_launcher import WarmRunLauncher

    fresh = tmp_path / "fresh" / "dagster.yaml"
    fresh.parent.mkdir()
    assert write_dagster_yaml(fresh) == "written"
    assert write_dagster_yaml(fresh) == "current"
    instance = DagsterInstance.from_config(str(fresh.parent))
    try:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert isinstance(instance.run_launcher, WarmRunLauncher)
    finally:
        instance.dispose()

    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(EARLIER_DAGSTER_YAMLS[0])
    assert write_dagster_yaml(earlier) == "upgraded"
    assert earlier.read_text() == DAGSTER_YAML

    edited = tmp_path / "edited.yaml"
    edited.write_text(EARLIER_DAGSTER_YAMLS[0] + "run_monitoring:\n  enabled: true\n")
    with caplog.at_level(logging.WARNING, logger="engage.dagster_home"):
        assert write_dagster_yaml(edited) == "kept"
    assert edited.read_text().endswith("run_monitoring:\n  enabled: true\n")
    assert "dagster_yaml_kept" in caplog.text and "dequeue_interval_seconds" in caplog.text


def test_the_dbt_manifest_is_stale_only_when_a_dbt_source_is_newer(tmp_path):
    from dagster_dbt import DbtProject

    from orchestration.resources import build_dbt_project, manifest_is_current

    build_dbt_project()  # the repository's manifest, parsed if it is not current
    copy = tmp_path / "dbt_project"
    shutil.copytree(PROJECT_DIR / "dbt_project", copy, ignore=shutil.ignore_patterns("logs", "engage_dbt_models-*"))
    project = DbtProject(project_dir=copy, profiles_dir=copy)
    assert manifest_is_current(project)
    later = time.time() + 5
    for output in (copy / "target" / "run_results.json", copy / "logs" / "dbt.log"):  # dbt's outputs: not sources
        output.parent.mkdir(exist_ok=True)
        output.write_text("{}")
        os.utime(output, (later, later))
    assert manifest_is_current(project)
    model = next((copy / "models" / "marts").glob("*.sql"))
    os.utime(model, (later + 5, later + 5))
    assert not manifest_is_current(project)
    (copy / "target" / "manifest.json").unlink()
    assert not manifest_is_current(project)


def test_loading_the_definitions_under_dagster_dev_does_not_parse_dbt():
    """`dagster dev` sets DAGSTER_IS_DEV_CLI for every process, run workers included: loading the
    definitions there must not run `dbt parse` (it cost ~9 s of every refresh)."""
    from orchestration.resources import build_dbt_project

    manifest = build_dbt_project().manifest_path
    before = manifest.stat().st_mtime_ns
    env = {**os.environ, "DAGSTER_IS_DEV_CLI": "1"}
    subprocess.run([sys.executable, "-c", "import orchestration.definitions"], env=env, cwd=PROJECT_DIR,
                   check=True, timeout=300)
    assert manifest.stat().st_mtime_ns == before


def test_refreshes_leave_out_the_per_test_asset_checks_and_rebuilds_report_them():
    """Each check costs Dagster event writes in every refresh; the refresh's dbt build still runs
    every test and fails on one (tests/test_faults.py), and the daily rebuild reports each."""
    from orchestration.definitions import defs

    def checks(job: str) -> set:
        return set(defs.resolve_job_def(job).asset_layer.asset_graph.asset_check_keys)

    assert checks("refresh_job") == set()
    assert checks("rebuild_job") == set(defs.resolve_asset_graph().asset_check_keys) != set()


def test_a_manifest_parsed_ahead_is_used_once_and_only_while_it_holds(tmp_path, monkeypatch):
    """A real `dbt parse` (orchestration/assets/dbt.py: parse_ahead), then the rules for using it."""
    from orchestration.assets import dbt as dbt_assets_module
    from orchestration.resources import EngageResource, newest_dbt_source_mtime

    monkeypatch.setenv("ENGAGE_HOME", str(tmp_path / "home"))
    for name in dbt_assets_module.PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    settings = EngageResource().settings()  # sets the profile's environment, as in a run
    dbt_assets_module.parse_ahead(settings)
    manifest = dbt_assets_module.take_parsed_ahead(["build"])
    assert manifest is not None and "model.engage.session_metrics_daily" in manifest.nodes
    assert not (settings.state_dir / "dbt_parse_ahead").exists()  # its folder is gone
    assert dbt_assets_module.take_parsed_ahead(["build"]) is None  # once

    dbt_assets_module.parse_ahead(settings)
    assert dbt_assets_module.take_parsed_ahead(["build", "--vars", "{full_tests: true}"]) is None

    dbt_assets_module.parse_ahead(settings)
    monkeypatch.setenv("ENGAGE_MARTS_PATH", str(tmp_path / "other.duckdb"))
    assert dbt_assets_module.take_parsed_ahead(["build"]) is None
    monkeypatch.setenv("ENGAGE_MARTS_PATH", str(settings.marts_path))

    dbt_assets_module.parse_ahead(settings)
    # As if a dbt source had been saved after the parse began (the repository's files stay untouched).
    dbt_assets_module._parsed_ahead.parse_started = newest_dbt_source_mtime(PROJECT_DIR / "dbt_project") - 1
    assert dbt_assets_module.take_parsed_ahead(["build"]) is None


# ----------------------------------------------------------------------------- the warm run worker


def _run_events(dagster_home: Path) -> list[tuple[str, str, list[str]]]:
    """(run id, status, engine-event and log messages) of every refresh_job run, oldest first."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    instance = DagsterInstance.from_config(str(dagster_home))
    try:
        runs = []
        for rec in reversed(instance.get_run_records(filters=RunsFilter(job_name="refresh_job"))):
            messages = [(e.dagster_event.message or "") if e.dagster_event else e.user_message
                        for e in instance.all_logs(rec.dagster_run.run_id)
                        if e.dagster_event is None or e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT]
            runs.append((rec.dagster_run.run_id, rec.dagster_run.status.value, messages))
        return runs
    finally:
        instance.dispose()


def _processes_in_group(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _published_count(settings: Settings) -> int:
    snapshot = current_snapshot(settings)
    if snapshot is None:
        return -1
    con = duckdb.connect(str(snapshot.path), read_only=True)
    try:
        return con.execute("SELECT raw_event_count FROM snapshot_info").fetchone()[0]
    finally:
        con.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_a_spare_gets_ready_at_the_lowest_priority_and_runs_at_its_own(monkeypatch):
    """The spare's preparation (imports, dbt parse) runs niced, so that it does not slow down the run
    it starts beside; the thread that will run the next run keeps its priority. A failure in the
    preparation reaches the caller."""
    import threading

    from orchestration import run_worker

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = niceness()
    monkeypatch.setattr(run_worker, "_get_ready", lambda: [niceness()])
    assert run_worker._get_ready_at_low_priority() == [19]
    assert niceness() == before

    def broken():
        raise RuntimeError("no definitions")

    monkeypatch.setattr(run_worker, "_get_ready", broken)
    with pytest.raises(RuntimeError, match="no definitions"):
        run_worker._get_ready_at_low_priority()


def test_a_spare_gets_ready_only_once_the_previous_run_worker_has_exited():
    """The next spare waits for the worker of the run before it (exited, even if not reaped yet), and
    stops waiting at once for what comes on its stdin: a run request, or the launcher's EOF."""
    from orchestration.run_worker import wait_for_previous_run

    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as stdin, os.fdopen(write_end, "w") as launcher:
        previous = subprocess.Popen(["sleep", "1"])  # not waited for: a zombie once it exits
        started = time.monotonic()
        assert wait_for_previous_run(previous.pid, stdin) is None
        assert 0.9 < time.monotonic() - started < 10
        previous.wait()
        assert wait_for_previous_run(previous.pid, stdin) is None  # gone: no wait

        running = subprocess.Popen(["sleep", "60"])
        try:
            launcher.write('{"run_id": "r1"}\n')
            launcher.flush()
            assert wait_for_previous_run(running.pid, stdin) == '{"run_id": "r1"}\n'
            launcher.close()
            assert wait_for_previous_run(running.pid, stdin) == ""
            assert running.poll() is None
        finally:
            running.kill()
            running.wait()


def test_the_daemon_launches_refreshes_in_a_warm_worker_and_a_new_process_after_a_code_change(tmp_path):
    """The real Dagster daemon and code server, the landing sensor, three refreshes: the first in a new
    process (no spare worker yet), the second in the warm spare, the third in a new process again
    because the code (here: the dbt manifest) changed after the spare imported it. Each run publishes
    every event so far; stopping the daemon leaves no process behind. The warm run leaves removing
    the older snapshots to the spare after it; the others remove them as they publish."""
    home = tmp_path / "home"
    settings = Settings(home=home)
    settings.ensure_dirs()
    ensure_dagster_home(settings)
    env = {**os.environ, "ENGAGE_HOME": str(home), "DAGSTER_HOME": str(settings.dagster_home),
           "ENGAGE_SENSOR_INTERVAL_SECONDS": "1", "ENGAGE_ADMIN_TOKEN": "warm-test-token",
           "ENGAGE_SNAPSHOTS_KEEP": "1"}
    env.pop("DAGSTER_IS_DEV_CLI", None)
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([BIN / "dagster-daemon", "run", "-w", "workspace.yaml"], cwd=PROJECT_DIR, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    manifest = PROJECT_DIR / "dbt_project" / "target" / "manifest.json"
    try:
        posted = 0
        for batch in range(3):
            if batch == 2:
                # The spare of run 3 gets ready once run 2's worker has exited, then restores the marts
                # file (which run 2's publish made the snapshot): from then on it holds the code.
                deadline = time.time() + 120
                while not settings.marts_path.exists():
                    assert time.time() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                    time.sleep(0.2)
                now = time.time()
                os.utime(manifest, (now, now))  # newer than what the spare imported
            events = edge_case_events(seed=80 + batch, n_events=150)
            write_ndjson(settings.landing / f"batch-{batch}.ndjson", events)
            posted += len(events)
            deadline = time.time() + 300
            while _published_count(settings) != posted:
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.time() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(0.5)
        # The last run is still writing its final events: stopping the daemon now would interrupt it.
        while any(status not in ("SUCCESS", "FAILURE", "CANCELED") for _, status, _ in _run_events(settings.dagster_home)):
            assert time.time() < deadline
            time.sleep(0.5)
        # The last publish made the marts file the snapshot; the next spare copies it back for the
        # next build while it waits (orchestration/run_worker.py, MartsKeeper).
        current = current_snapshot(settings)
        while not settings.marts_path.exists():
            assert time.time() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(0.5)
        assert settings.marts_path.read_bytes() == current.path.read_bytes()
    finally:
        os.killpg(daemon.pid, signal.SIGINT)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        deadline = time.time() + 20
        while _processes_in_group(daemon.pid) and time.time() < deadline:
            time.sleep(0.2)
        left = _processes_in_group(daemon.pid)
        if left:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
    assert left == [], f"processes left behind: {left}"

    runs = _run_events(settings.dagster_home)
    assert [status for _, status, _ in runs] == ["SUCCESS"] * 3, runs
    launched = [next(m for m in messages if "Launched in" in m) for _, _, messages in runs]
    assert "a new process: no spare worker yet" in launched[0]
    assert "a warm run worker" in launched[1]
    assert "a new process: declined the code changed" in launched[2]
    parsed_ahead = [next(m for m in messages if "event=dbt_build_started" in m) for _, _, messages in runs]
    assert [("parsed_ahead=True" in m) for m in parsed_ahead] == [False, True, False]
    # The spare started at run 2's hand-over got ready after run 2's worker had exited, then restored
    # the marts for run 3, whose build had nothing to restore; the spare started at run 3's launch
    # (declined: a new process) did not wait, and restored the marts after run 3.
    daemon_log = (tmp_path / "daemon.log").read_text()
    assert daemon_log.count("event=spare_waited_for_run") == 1, daemon_log[-3000:]
    assert daemon_log.count("event=marts_restored_ahead") >= 2, daemon_log[-3000:]
    # Run 2 (warm) left run 1's snapshot to the spare after it; run 3 (a new process) removed run 2's.
    assert daemon_log.count("event=snapshots_pruned_ahead removed=1") == 1, daemon_log[-3000:]
    assert sorted(settings.snapshots_dir.glob("*.duckdb")) == [current.path]
    assert not any("event=marts_restored " in m for m in runs[2][2])
