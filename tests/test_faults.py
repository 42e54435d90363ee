"""Faults (issue 6): a dbt test failing on a new build, a full disk during a load, kill -9 of a
Dagster run and of the API, a damaged or missing snapshot file or pointer. In each case the API
keeps serving the last good snapshot, /ready reports the problem, and the next good run repairs
everything. Real processes, real dbt, real Dagster runs, real disk writes that fail.

test_refresh_safety.py already proves crashes at the named fault points (ENGAGE_FAULT) and
kill -9 of `engage ingest` mid-dbt; this file reuses its helpers and adds what it does not cover.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import httpx
import pytest
from edge_data import edge_case_events, split_into_files, write_ndjson
from fastapi.testclient import TestClient
from test_refresh_safety import (  # noqa: F401  (server_factory is a fixture)
    ENGAGE,
    QUERIES,
    Server,
    assert_matches_reference,
    env_for,
    ingest,
    raw_counts,
    server_factory,
)

from engage.settings import Settings
from engage.snapshots import CURRENT_FILE, current_snapshot
from serving.app import create_app

DAGSTER = str(Path(sys.executable).parent / "dagster")


def ready(client) -> tuple[int, dict]:
    r = client.get("/ready")
    return r.status_code, r.json()


def assert_ready(client, snapshot_id: str) -> None:
    status, body = ready(client)
    assert (status, body["status"], body["snapshot_id"], body["problems"]) == (200, "ready", snapshot_id, []), body["problems"]


def assert_degraded(client, snapshot_id: str, *words: str) -> None:
    """200 (the snapshot still serves) with status "degraded" and a problem holding every word."""
    status, body = ready(client)
    assert (status, body["status"], body["snapshot_id"]) == (200, "degraded", snapshot_id), body
    assert any(all(w in p for w in words) for p in body["problems"]), (words, body["problems"])


def pointer(home: Path) -> bytes:
    return (home / "snapshots" / CURRENT_FILE).read_bytes()


def publish_and_serve(home: Path, server_factory, events: list[dict]) -> tuple[Server, str, list]:
    """`events` loaded and published by `engage ingest`, an API serving them, and its answers."""
    write_ndjson(home / "landing" / "a.ndjson", events)
    assert ingest(home).returncode == 0
    server = server_factory(home)
    return (server, *server.answers())


def ledger(home: Path) -> list[tuple]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT name, rows_loaded FROM raw.loaded_files ORDER BY batch_id").fetchall()
    finally:
        con.close()


# ----------------------------------------------------------------------------- dbt tests fail


def test_a_build_whose_dbt_tests_fail_is_never_published_and_a_good_run_repairs(tmp_path, server_factory):
    """Raw data cannot break a dbt test (the loader validates every row), so a failing test means a
    damaged warehouse or a bug: here an hourly mart loses its busiest hour, and the next build
    (new events on that day, none in that hour) re-aggregates the day from the damaged hours: the
    reconciliation test (marts = raw, over the days that changed) fails. Nothing of that build may
    reach the API."""
    home = tmp_path / "home"
    events = edge_case_events(seed=31, n_events=1500)
    server, good_id, good = publish_and_serve(home, server_factory, events)
    good_pointer = pointer(home)

    con = duckdb.connect(str(home / "warehouse.duckdb"))
    if (home / "marts.duckdb").exists():  # the marts in their own file, attached as `marts`
        con.execute(f"ATTACH '{home / 'marts.duckdb'}' AS marts")
    (hour,) = con.execute("SELECT period_start FROM marts.user_engagement_hourly GROUP BY 1 "
                          "ORDER BY sum(event_count) DESC LIMIT 1").fetchone()
    con.execute("DELETE FROM marts.user_engagement_hourly WHERE period_start = ?", [hour])
    con.close()
    more = [e for e in edge_case_events(seed=32, n_events=600) if not e["timestamp"].startswith(hour.strftime("%Y-%m-%d %H"))]
    same_day_other_hour = hour + timedelta(minutes=90 if hour.hour < 22 else -30)
    more.append({**more[0], "timestamp": same_day_other_hour.strftime("%Y-%m-%d %H:%M:%S")})
    write_ndjson(home / "landing" / "b.ndjson", more)

    failed = ingest(home)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "assert_event_marts_match_raw_totals" in failed.stderr and "nothing will be published" in failed.stderr
    assert pointer(home) == good_pointer  # CURRENT did not move
    assert server.answers() == (good_id, good)
    assert_degraded(server.client, good_id, "failed in step engage_dbt_models", "assert_event_marts_match_raw_totals")

    # The full rebuild (the daily schedule, or `engage ingest --full-refresh`) recomputes every mart.
    repaired = subprocess.run([ENGAGE, "ingest", "--full-refresh"], env=env_for(home), capture_output=True,
                              text=True, timeout=300)
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    new_id = json.loads(pointer(home))["snapshot_id"]
    assert new_id != good_id
    time.sleep(0.6)  # the API looks at CURRENT every 0.5 s
    assert_ready(server.client, new_id)
    assert raw_counts(home) == (len(events) + len(more), 2)
    assert_matches_reference(server, events + more)


# ----------------------------------------------------------------------------- disk full


def ingest_with_file_size_limit(home: Path, limit: int) -> subprocess.CompletedProcess:
    """`engage ingest` where no file may grow past `limit` bytes: every write past it fails (EFBIG)
    exactly as a write to a full disk fails (ENOSPC), through the same code."""

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([ENGAGE, "ingest"], env=env_for(home), capture_output=True, text=True,
                          timeout=300, preexec_fn=limit_writes)


def test_a_full_disk_during_a_load_commits_nothing_partial_and_the_next_run_loads_everything_once(tmp_path, server_factory):
    home = tmp_path / "home"
    first = edge_case_events(seed=41, n_events=1500)
    server, good_id, good = publish_and_serve(home, server_factory, first)

    # A small file that loads before the big one, and a big one whose writes do not fit: no file may
    # grow past 2 MB, above Dagster's own files (under 1.5 MB here), below the write-ahead log that
    # the big file's commit writes (about 5 MB for 45,000 events).
    small = edge_case_events(seed=42, n_events=300)
    big = edge_case_events(seed=43, n_events=45000)
    write_ndjson(home / "landing" / "b-small.ndjson", small)
    write_ndjson(home / "landing" / "c-big.ndjson", big)

    run = ingest_with_file_size_limit(home, 2_000_000)
    assert run.returncode == 1, run.stderr[-3000:]
    assert 'event=load_failed file=c-big.ndjson reason="disk full"' in run.stderr, run.stderr[-3000:]
    assert "out of disk space while loading c-big.ndjson" in run.stderr and "Could not write file" in run.stderr
    # Whole files only: the small file committed, nothing of the big one.
    assert ledger(home) == [("a.ndjson", len(first)), ("b-small.ndjson", len(small))]
    assert raw_counts(home) == (len(first) + len(small), 2)
    assert server.answers() == (good_id, good)
    assert_degraded(server.client, good_id, "failed in step load_landing_files", "out of disk space")

    assert ingest(home).returncode == 0  # the disk has room again
    assert ledger(home) == [("a.ndjson", len(first)), ("b-small.ndjson", len(small)), ("c-big.ndjson", len(big))]
    assert raw_counts(home) == (len(first) + len(small) + len(big), 3)
    time.sleep(0.6)
    assert_ready(server.client, json.loads(pointer(home))["snapshot_id"])
    assert_matches_reference(server, first + small + big)


# ----------------------------------------------------------------------------- kill -9


def test_kill_9_of_a_dagster_run_and_of_the_api(tmp_path, server_factory):
    home = tmp_path / "home"
    events = edge_case_events(seed=51, n_events=2000)
    parts = split_into_files(events, seed=51, n_files=2)
    server, good_id, good = publish_and_serve(home, server_factory, parts[0])

    # kill -9 of the API: restarted, it serves the same snapshot, the same answers.
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    with pytest.raises(httpx.TransportError):
        server.client.get("/health")
    server = server_factory(home)
    assert server.answers() == (good_id, good)
    assert_ready(server.client, good_id)

    # kill -9 of a Dagster run launched by Dagster's own CLI (not `engage ingest`), mid-run.
    write_ndjson(home / "landing" / "p1.ndjson", parts[1])
    status_file = home / "state" / "last_refresh.json"
    before = status_file.read_text()
    run = subprocess.Popen([DAGSTER, "job", "execute", "-m", "orchestration.definitions", "-j", "refresh_job"],
                           env=env_for(home, DAGSTER_HOME=str(home / "dagster")), cwd=Path(__file__).parent.parent,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while status_file.read_text() == before:  # the run has started loading
        assert time.time() < deadline and run.poll() is None
        time.sleep(0.1)
    assert json.loads(status_file.read_text())["status"] == "running"
    time.sleep(1.0)
    os.killpg(run.pid, signal.SIGKILL)
    assert run.wait(30) == -signal.SIGKILL
    assert server.answers() == (good_id, good)
    assert_degraded(server.client, good_id, "died without finishing", f"process {run.pid} is gone")

    assert ingest(home).returncode == 0  # the next run repairs: every file once
    time.sleep(0.6)
    assert_ready(server.client, json.loads(pointer(home))["snapshot_id"])
    assert raw_counts(home) == (len(events), 2)
    assert_matches_reference(server, events)


# ----------------------------------------------------------------------------- damaged snapshots


class InProcess(Server):
    """The FastAPI app in this process (a fresh start each time), through Server's query helpers."""

    def __init__(self, settings: Settings):
        self.client = TestClient(create_app(settings))

    def stop(self) -> None:  # as the app's shutdown does (TestClient runs it only as a context manager)
        self.client.app.state.snapshots.close()
        self.client.close()


@pytest.fixture
def two_snapshots(tmp_path):
    """A home with two published snapshots (older, current) and each one's answers."""
    home = tmp_path / "home"
    events = edge_case_events(seed=61, n_events=1500)
    parts = split_into_files(events, seed=61, n_files=3)
    settings = Settings(home=home, admin_token=env_for(home)["ENGAGE_ADMIN_TOKEN"])
    answers = {}
    for i in range(2):
        write_ndjson(home / "landing" / f"p{i}.ndjson", parts[i])
        assert ingest(home).returncode == 0
        api = InProcess(settings)
        snapshot_id, data = api.answers()
        answers[snapshot_id] = data
        api.stop()
    older, current = sorted(answers)
    return settings, events, parts, answers, older, current


def test_a_damaged_or_missing_pointer_or_snapshot_file_never_stops_serving(two_snapshots):
    settings, events, parts, answers, older, current = two_snapshots
    snaps = settings.snapshots_dir
    running = InProcess(settings)
    running.client.app.state.snapshots.check_interval = 0
    assert running.answers() == (current, answers[current])
    good_pointer = pointer(settings.home)

    def fresh_start() -> InProcess:
        return InProcess(settings)

    # 0. A new snapshot whose file is damaged as it is written (a lost write) fails its read-back
    #    check: it is deleted, CURRENT never names it.
    write_ndjson(settings.landing / "p2.ndjson", parts[2])
    files_before = sorted(snaps.iterdir())
    failed = ingest(settings.home, ENGAGE_FAULT="publish_damaged_write")
    assert failed.returncode == 1 and "failed validation and was not published" in failed.stderr, failed.stderr[-3000:]
    assert pointer(settings.home) == good_pointer and sorted(snaps.iterdir()) == files_before
    assert running.answers() == (current, answers[current])
    assert_degraded(running.client, current, "failed in step published_snapshot", "failed validation")

    # 1. A garbage CURRENT pointer: the running API keeps its snapshot; a fresh one takes the newest.
    (snaps / CURRENT_FILE).write_text("{not json")
    assert running.answers() == (current, answers[current])
    assert_degraded(running.client, current, "CURRENT pointer is damaged")
    api = fresh_start()
    assert api.answers() == (current, answers[current])
    assert_degraded(api.client, current, "CURRENT pointer is damaged", f"serving snapshot {current}")
    api.stop()

    # 2. CURRENT names a file that is gone.
    (snaps / CURRENT_FILE).write_text(json.dumps({"snapshot_id": "gone", "file": "gone.duckdb"}))
    assert running.answers() == (current, answers[current])
    assert_degraded(running.client, current, "gone.duckdb, which does not exist")
    (snaps / CURRENT_FILE).write_bytes(good_pointer)
    problems = ready(running.client)[1]["problems"]
    assert len(problems) == 1 and "failed in step published_snapshot" in problems[0], problems  # step 0's

    # 3. The current snapshot file is truncated in place while served: the API moves to the older
    #    snapshot; a fresh start does the same.
    current_file = snaps / f"{current}.duckdb"
    original = current_file.read_bytes()
    with open(current_file, "r+b") as fh:
        fh.truncate(len(original) // 3)
    assert running.answers() == (older, answers[older])
    assert_degraded(running.client, older, f"snapshot {current} changed on disk", f"serving snapshot {older}")
    api = fresh_start()
    assert api.answers() == (older, answers[older])
    assert_degraded(api.client, older, f"snapshot {current} cannot be read", f"serving snapshot {older}")
    api.stop()

    # 4. Garbage in place of the current file (same size), and the pointer removed: the older one serves.
    current_file.write_bytes(os.urandom(len(original)))
    (snaps / CURRENT_FILE).unlink()
    api = fresh_start()
    assert api.answers() == (older, answers[older])
    assert_degraded(api.client, older, "no CURRENT pointer", f"serving snapshot {older}")
    api.stop()

    # 5. Nothing readable: 503 naming the problem, for /ready and the pipes (never a 500). (The
    #    running app is stopped first: in one process DuckDB would hand out its cached open file.)
    running.stop()
    (snaps / f"{older}.duckdb").write_bytes(b"\0" * 4096)
    api = fresh_start()
    api.client.app.state.snapshots.check_interval = 0
    r = api.get(QUERIES[0])
    assert r.status_code == 503 and "cannot be read" in r.json()["error"], r.text
    status, body = ready(api.client)
    assert status == 503 and "no CURRENT pointer" in body["error"] and "cannot be read" in body["error"], body

    # 6. The next publish repairs: a new snapshot, CURRENT rewritten; the app that could serve
    #    nothing serves it without a restart, and so does a fresh start.
    assert ingest(settings.home).returncode == 0
    repaired = current_snapshot(settings).snapshot_id
    assert repaired not in (older, current)
    assert_ready(api.client, repaired)
    assert_matches_reference(api, events)
    api.stop()
    api = fresh_start()
    assert_ready(api.client, repaired)
    api.stop()
