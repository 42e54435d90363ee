"""POST /v0/events: validation, persistence, limits, tokens; posted events reach the pipes."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta

import duckdb
import orjson
import pytest
from conftest import ADMIN_TOKEN
from fastapi.testclient import TestClient

from engage.loader import connect_warehouse, load_pending
from engage.settings import Settings
from serving.app import create_app

APPEND_TOKEN = "append-token-0123456789"
READ_TOKEN = "read-token-0123456789"


@pytest.fixture
def settings(engage_home, tmp_path) -> Settings:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nname = "tracker"\ntoken = "{APPEND_TOKEN}"\nscopes = ["DATASOURCES:APPEND:user_events"]\n'
        f'[[tokens]]\nname = "dashboard"\ntoken = "{READ_TOKEN}"\nscopes = ["PIPES:READ"]\n'
    )
    return Settings(home=engage_home.home, tokens_file=tokens, admin_token=ADMIN_TOKEN)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def event(i: int, **overrides) -> dict:
    ts = datetime(2025, 3, 1, 12) + timedelta(minutes=i)
    return {"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "user_id": f"u{i % 7}", "event_type": "click",
            "session_id": f"s{i % 11}", "duration": i % 60, "platform": "web", "country": "FR", **overrides}


def ndjson(rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows)


def post(client, body: bytes, token=APPEND_TOKEN, params="name=user_events", headers=None):
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/v0/events?{params}", content=body, headers={**hdrs, **(headers or {})})


def warehouse(settings):
    load_pending(settings)
    return connect_warehouse(settings)


def test_valid_events_are_accepted_and_loaded(client, settings):
    rows = [event(i) for i in range(50)]
    r = post(client, ndjson(rows))
    assert r.status_code == 202 and r.json() == {"successful_rows": 50, "quarantined_rows": 0}
    con = warehouse(settings)
    assert con.execute("SELECT count(*), sum(duration) FROM raw.user_events").fetchall() == [(50, sum(e["duration"] for e in rows))]


def test_mixed_batch_quarantines_with_request_source_and_line_numbers(client, settings):
    body = ndjson([event(0), b"{not json", event(1, user_id=""), b"", event(2, duration=3.5), event(3)])
    r = post(client, body, params="name=user_events&wait=true")
    assert r.status_code == 200 and r.json() == {"successful_rows": 2, "quarantined_rows": 3}
    request_id = r.headers["X-Request-ID"]
    con = warehouse(settings)
    assert con.execute("SELECT count(*) FROM raw.user_events").fetchall() == [(2,)]
    rows = con.execute("SELECT source, line_number, error FROM raw.user_events_quarantine ORDER BY line_number").fetchall()
    assert [(s, n) for s, n, _ in rows] == [(f"request:{request_id}", 2), (f"request:{request_id}", 3), (f"request:{request_id}", 5)]
    assert "invalid JSON" in rows[0][2] and rows[1][2].startswith("user_id") and rows[2][2].startswith("duration")
    # The rejected file was consumed; a second load adds nothing.
    load_pending(settings)
    assert con.execute("SELECT count(*) FROM raw.user_events_quarantine").fetchall() == [(3,)]


def test_wait_true_means_the_batch_is_on_disk_before_the_answer(client, settings):
    r = post(client, ndjson([event(i) for i in range(5)]), params="name=user_events&wait=true")
    assert r.status_code == 200
    files = [p for p in settings.landing.rglob("*.ndjson")]
    assert len(files) == 1 and files[0].read_bytes().count(b"\n") == 5
    assert not list(settings.landing.rglob(".*.tmp"))


def test_gzip_body(client, settings):
    r = post(client, gzip.compress(ndjson([event(i) for i in range(20)])), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 202 and r.json()["successful_rows"] == 20


@pytest.mark.parametrize(
    "body,headers,status,words",
    [
        (b"x" * (10 * 1024 * 1024 + 1), {}, 413, "too large"),
        (gzip.compress(b"\n" * (120 * 1024 * 1024)), {"Content-Encoding": "gzip"}, 413, "Decompressed"),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (b"{}", {"Content-Encoding": "br"}, 400, "Content-Encoding"),
    ],
)
def test_body_limits_and_encodings(client, body, headers, status, words):
    r = post(client, body, headers=headers)
    assert r.status_code == status and words in r.json()["error"]


@pytest.mark.parametrize(
    "token,params,status",
    [
        (None, "name=user_events", 403),
        ("unknown-token", "name=user_events", 403),
        (READ_TOKEN, "name=user_events", 403),
        (APPEND_TOKEN, "", 400),
        (APPEND_TOKEN, "name=other", 404),
        (APPEND_TOKEN, "name=user_events&wait=maybe", 400),
        (ADMIN_TOKEN, "name=user_events", 202),
        (APPEND_TOKEN, "name=user_events", 202),
    ],
)
def test_tokens_and_parameters(client, token, params, status):
    r = post(client, ndjson([event(1)]), token=token, params=params)
    assert r.status_code == status, r.text
    if status >= 400:
        assert set(r.json()) == {"error", "documentation"}


def test_token_in_query_string(client):
    r = client.post(f"/v0/events?name=user_events&token={APPEND_TOKEN}", content=ndjson([event(1)]))
    assert r.status_code == 202


def test_posted_events_appear_in_the_pipes_after_the_next_run(client, settings, engage_home):
    from engage.cli import run_refresh

    rows = [event(i) for i in range(30)]
    r = post(client, ndjson(rows + [b"[1]"]), params="name=user_events&wait=true")
    assert r.json() == {"successful_rows": 30, "quarantined_rows": 1}
    assert run_refresh(settings).success
    q = client.get("/v0/pipes/event_metrics.json", params={
        "token": ADMIN_TOKEN, "start_date": "2025-03-01", "end_date": "2025-03-02"})
    assert q.status_code == 200, q.text
    assert q.json()["data"] == [{"event_type": "click", "event_count": 30, "unique_users": 7,
                                 "avg_duration": sum(e["duration"] for e in rows) / 30}]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    loaded, quarantined = con.execute(
        "SELECT (SELECT count(*) FROM raw.user_events), (SELECT count(*) FROM raw.user_events_quarantine)").fetchall()[0]
    assert loaded + quarantined == 31
