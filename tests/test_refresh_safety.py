"""One writer, serving during refreshes, crash safety: real processes, real server, real kills."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import oracle_table
from edge_data import edge_case_events, split_into_files, write_ndjson
from reference import PipeQuery, reference_answer
from test_serving_data import assert_rows_equal, expected_rows

TOKEN = "refresh-safety-admin-token"
ENGAGE = str(Path(sys.executable).parent / "engage")
WINDOW = {"start_date": "2025-01-20 00:00:00", "end_date": "2025-02-15 23:59:59"}
# One query per pipe: what clients keep asking while refreshes run.
QUERIES = [
    PipeQuery("session_metrics", datetime(2025, 1, 20), datetime(2025, 2, 15, 23, 59, 59), "day"),
    PipeQuery("user_engagement_time_series", datetime(2025, 1, 20), datetime(2025, 2, 15, 23, 59, 59), "week"),
    PipeQuery("active_users", datetime(2025, 1, 20), datetime(2025, 2, 15, 23, 59, 59), "day"),
    PipeQuery("geographic_distribution", datetime(2025, 1, 20), datetime(2025, 2, 15, 23, 59, 59), "day"),
    PipeQuery("event_metrics", datetime(2025, 1, 20), datetime(2025, 2, 15, 23, 59, 59), "day"),
]


def env_for(home: Path, **extra) -> dict:
    env = {**os.environ, "ENGAGE_HOME": str(home), "ENGAGE_ADMIN_TOKEN": TOKEN, **extra}
    env.pop("ENGAGE_FAULT", None)
    env.update(extra)
    return env


def ingest(home: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([ENGAGE, "ingest"], env=env_for(home, **extra), capture_output=True, text=True, timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`engage serve` on 127.0.0.1, stopped (with its process group) when the test ends."""

    def __init__(self, home: Path):
        self.port = free_port()
        self.proc = subprocess.Popen([ENGAGE, "serve", "--port", str(self.port)], env=env_for(home),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API did not become ready")

    def answers(self) -> tuple[str, list]:
        """All pipes' answers, which must come from one snapshot."""
        snapshots, data = set(), []
        for q in QUERIES:
            r = self.get(q)
            snapshots.add(r.headers["X-Engage-Snapshot"])
            data.append(r.json()["data"])
        assert len(snapshots) == 1, snapshots
        return snapshots.pop(), data

    def get(self, q: PipeQuery) -> httpx.Response:
        params = {"start_date": q.start.strftime("%Y-%m-%d %H:%M:%S"), "end_date": q.end.strftime("%Y-%m-%d %H:%M:%S"),
                  "time_bucket": q.time_bucket, "token": TOKEN}
        return self.client.get(f"/v0/pipes/{q.pipe}.json", params=params)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def server_factory():
    servers = []

    def start(home: Path) -> Server:
        servers.append(Server(home))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def assert_matches_reference(server: Server, events: list[dict]) -> None:
    oracle = duckdb.connect()
    oracle_table(oracle, events)
    for q in QUERIES:
        r = server.get(q)
        assert r.status_code == 200, r.text
        assert_rows_equal(r.json()["data"], expected_rows(reference_answer(oracle, q)), q.pipe)


def raw_counts(home: Path) -> tuple[int, int]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT (SELECT count(*) FROM raw.user_events), (SELECT count(*) FROM raw.loaded_files)").fetchall()[0]
    finally:
        con.close()


def test_two_refreshes_started_together_are_serialized(tmp_path, server_factory):
    home = tmp_path / "home"
    events = edge_case_events(seed=21, n_events=1200)
    for i, chunk in enumerate(split_into_files(events, seed=21, n_files=3)):
        write_ndjson(home / "landing" / f"f{i}.ndjson", chunk)
    procs = [subprocess.Popen([ENGAGE, "ingest"], env=env_for(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert any("event=refresh_lock_waiting" in err for _, err in outputs)  # the second one waited
    assert raw_counts(home) == (len(events), 3)  # every file loaded once
    assert_matches_reference(server_factory(home), events)


def test_serving_never_fails_during_refreshes_and_crashes(tmp_path, server_factory):
    home = tmp_path / "home"
    events = edge_case_events(seed=22, n_events=2000)
    parts = split_into_files(events, seed=22, n_files=3)
    write_ndjson(home / "landing" / "p0.ndjson", parts[0])
    assert ingest(home).returncode == 0
    server = server_factory(home)
    before_id, before = server.answers()

    # Clients keep querying every pipe while everything below happens.
    seen: dict[str, list] = defaultdict(list)
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as c:
            while not stop.is_set():
                for i, q in enumerate(QUERIES):
                    params = {**WINDOW, "time_bucket": q.time_bucket, "token": TOKEN}
                    try:
                        r = c.get(f"/v0/pipes/{q.pipe}.json", params=params)
                    except httpx.HTTPError as exc:
                        failures.append(f"client {n}: {exc!r}")
                        continue
                    if r.status_code != 200:
                        failures.append(f"client {n}: {r.status_code} {r.text[:200]}")
                        continue
                    seen[r.headers["X-Engage-Snapshot"]].append((i, r.json()["data"]))
                stop.wait(0.05)  # steady traffic, without starving the refresh of the 2 cores

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        # 1. A clean refresh while clients query.
        write_ndjson(home / "landing" / "p1.ndjson", parts[1])
        assert ingest(home).returncode == 0
        after_id, after = server.answers()
        assert after_id != before_id
        # 2. Crashes: after the rows, before the load commits; mid-dbt (kill -9); before the snapshot swap.
        write_ndjson(home / "landing" / "p2.ndjson", parts[2])
        assert ingest(home, ENGAGE_FAULT="load_before_commit").returncode == 137
        proc = subprocess.Popen([ENGAGE, "ingest"], env=env_for(home), stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        for line in proc.stderr:
            if "event=load_finished" in line:
                time.sleep(1.0)  # dbt is building now
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        assert ingest(home, ENGAGE_FAULT="publish_before_swap").returncode == 137
        # The API never moved off the last good snapshot.
        assert server.answers() == (after_id, after)
        # 3. The next run repairs everything: nothing lost, nothing counted twice.
        assert ingest(home).returncode == 0
    finally:
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    final_id, _ = server.answers()
    assert raw_counts(home) == (len(events), 3)
    assert_matches_reference(server, events)
    # Every answer seen came whole from one snapshot: the before, after or final one.
    assert set(seen) <= {before_id, after_id, final_id}
    for snapshot_id, answers in seen.items():
        by_query = defaultdict(set)
        for i, data in answers:
            by_query[i].add(repr(data))
        assert all(len(v) == 1 for v in by_query.values()), snapshot_id
    assert sum(len(a) for a in seen.values()) > 20
