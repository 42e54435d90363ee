"""The HTTP surface of the pipes without data: every 400/403/404/405/503 of the contract, the token
matrix, error shape, headers, health/readiness, OpenAPI, the snapshot reader, log redaction and
`serve()`.

Nothing here needs marts: requests that pass validation and auth meet "nothing published yet"
(503), which is how an allowed request is told apart from a refused one. Where a snapshot is
needed (headers, switching), a stand-in file holding only ``snapshot_info`` is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from fastapi import Query
from fastapi.testclient import TestClient

from engage.settings import Settings
from engage.snapshots import PUBLISHED_MARTS
from serving.app import create_app
from serving.auth import TokensFileError
from serving.logs import RedactTokens, redact, uvicorn_log_config
from serving.pipes import PIPES
from serving.snapshots import SnapshotManager, SnapshotUnavailable

ADMIN = "admin-Zx9-very-secret"
TOKENS = {
    "reader": ("tok-reader-1234567890", ["PIPES:READ"]),
    "sessions": ("tok-sessions-1234567890", ["PIPES:READ:session_metrics"]),
    "two": ("tok-two-1234567890", ["PIPES:READ:active_users", "PIPES:READ:event_metrics"]),
    "tracker": ("tok-tracker-1234567890", ["DATASOURCES:APPEND:user_events"]),
    "nothing": ("tok-nothing-1234567890", []),
}
PIPE_NAMES = list(PIPES)
WINDOW = "start_date=2023-01-01%2000:00:00&end_date=2023-01-31%2023:59:59"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def write_tokens(path: Path, tokens: dict = TOKENS) -> Path:
    lines = []
    for name, (token, scopes) in tokens.items():
        lines += ["[[tokens]]", f'name = "{name}"', f'token = "{token}"', f"scopes = {json.dumps(scopes)}", ""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", admin_token=ADMIN, tokens_file=write_tokens(tmp_path / "tokens.toml"))


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def fake_snapshot(settings: Settings, snapshot_id: str, watermark: str | None = "2023-05-06 07:08:09",
                  marts: bool = True) -> Path:
    """A stand-in published snapshot: snapshot_info, empty one-column marts (or none), and the
    CURRENT pointer to it."""
    d = settings.snapshots_dir
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{snapshot_id}.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE snapshot_info AS SELECT ?::VARCHAR AS snapshot_id, ?::TIMESTAMP AS watermark, "
        "now()::TIMESTAMP AS published_at, 0::BIGINT AS raw_event_count", [snapshot_id, watermark])
    for mart in PUBLISHED_MARTS if marts else ():
        con.execute(f"CREATE TABLE {mart} (period_start TIMESTAMP)")
    con.close()
    tmp = d / ".CURRENT.tmp"
    tmp.write_text(json.dumps({"snapshot_id": snapshot_id, "file": path.name}))
    os.replace(tmp, d / "CURRENT")
    return path


def assert_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "documentation"}
    assert body["error"] and body["documentation"]
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body["error"]


def get(client, pipe: str, query: str = "", token: str | None = ADMIN, fmt: str = "json", **kw):
    q = query + (f"&token={token}" if token else "")
    return client.get(f"/v0/pipes/{pipe}.{fmt}?{q.lstrip('&')}", **kw)


# ----------------------------------------------------------------------------- 400: parameters


BAD_PARAMS = [
    # (pipes, query, parameter named in the message)
    (PIPE_NAMES, "start_date=2023-1-1", "start_date"),
    (PIPE_NAMES, "end_date=2023-01-01%2010:00", "end_date"),
    (PIPE_NAMES, "start_date=2023-02-30", "start_date"),
    (PIPE_NAMES, "end_date=2023-01-01T10:00:00Z", "end_date"),
    (PIPE_NAMES, "start_date=2023-01-02&end_date=2023-01-01", "start_date"),
    (PIPE_NAMES, "start_date=9999-01-01", "start_date"),  # after the default end (now)
    (["session_metrics", "user_engagement_time_series", "active_users"], "time_bucket=year", "time_bucket"),
    (["session_metrics", "user_engagement_time_series", "active_users"],
     "start_date=2023-01-01&end_date=2025-01-01&time_bucket=hour", "time_bucket"),
    (["geographic_distribution", "event_metrics"], "limit=0", "limit"),
    (["geographic_distribution", "event_metrics"], "limit=10001", "limit"),
    (["geographic_distribution", "event_metrics"], "limit=ten", "limit"),
    (["geographic_distribution", "event_metrics"], "limit=-5", "limit"),
    (["active_users"], "segment_by_platform=yes", "segment_by_platform"),
    (["geographic_distribution"], "group_by=continent", "group_by"),
]


@pytest.mark.parametrize("pipes, query, param", BAD_PARAMS)
def test_bad_parameters_are_400_naming_the_parameter(client, pipes, query, param):
    for pipe in pipes:
        for fmt in ("json", "csv"):
            msg = assert_error(get(client, pipe, query, fmt=fmt), 400, param)
            assert "use" in msg or "give" in msg  # ... and the accepted form


def test_bucket_limit_over_http(client):
    # 2023-01-01 00:00 .. +9999 hours = exactly 10,000 hourly buckets: valid (then 503: no data yet)
    ok = "start_date=2023-01-01%2000:00:00&end_date=2024-02-21%2015:59:59&time_bucket=hour"
    for pipe in ("session_metrics", "user_engagement_time_series", "active_users"):
        assert_error(get(client, pipe, ok), 503)
        assert_error(get(client, pipe, ok.replace("15:59:59", "16:00:00")), 400, "10000", "time_bucket")
    # ranking pipes have no buckets
    assert_error(get(client, "event_metrics", "start_date=0001-01-01&end_date=9999-12-31"), 503)


def test_unknown_parameters_and_foreign_filters_are_ignored(client):
    assert_error(get(client, "session_metrics", f"{WINDOW}&event_type=click&foo=bar&limit=0&group_by=x"), 503)
    assert_error(get(client, "event_metrics", f"{WINDOW}&time_bucket=century&segment_by_platform=maybe"), 503)


def test_valid_parameter_forms_pass_validation(client):
    for q in ("start_date=2023-01-01T00:00:00&end_date=2023-01-02T00:00:00",
              "start_date=2023-01-01&end_date=2023-01-01",
              "start_date=&end_date=&platform=&time_bucket=",
              "platform=web,ios&device=desktop&country=US&event_type=page_view,click&limit=10000"):
        for pipe in PIPE_NAMES:
            assert_error(get(client, pipe, q), 503)


def test_validation_comes_before_data_but_after_auth(client):
    assert_error(get(client, "session_metrics", "start_date=bad", token=None), 403)
    assert_error(get(client, "session_metrics", "start_date=bad"), 400)


# ----------------------------------------------------------------------------- 403: tokens


def _allowed(r) -> bool:
    """Passed auth (no data yet: 503) or refused (403)."""
    assert r.status_code in (403, 503), r.text
    return r.status_code == 503


EXPECTED_ACCESS = {
    "admin": set(PIPE_NAMES),
    "reader": set(PIPE_NAMES),
    "sessions": {"session_metrics"},
    "two": {"active_users", "event_metrics"},
    "tracker": set(),
    "nothing": set(),
}


@pytest.mark.parametrize("who", list(EXPECTED_ACCESS))
@pytest.mark.parametrize("how", ["query", "bearer", "bearer-lowercase"])
def test_token_scopes(client, who, how):
    token = ADMIN if who == "admin" else TOKENS[who][0]
    for pipe in PIPE_NAMES:
        if how == "query":
            r = get(client, pipe, WINDOW, token=token)
        else:
            scheme = "Bearer" if how == "bearer" else "bearer"
            r = get(client, pipe, WINDOW, token=None, headers={"Authorization": f"{scheme} {token}"})
        assert _allowed(r) == (pipe in EXPECTED_ACCESS[who]), (who, pipe)
        if r.status_code == 403 and who not in ("admin", "reader"):
            assert_error(r, 403, "scope")


@pytest.mark.parametrize("pipe", PIPE_NAMES)
def test_missing_and_unknown_tokens(client, pipe):
    assert_error(get(client, pipe, WINDOW, token=None), 403, "token")
    assert_error(get(client, pipe, WINDOW, token="nope"), 403, "token")
    assert_error(get(client, pipe, WINDOW, token=ADMIN + "x"), 403)
    assert_error(get(client, pipe, WINDOW, token=ADMIN[:-1]), 403)
    assert_error(get(client, pipe, WINDOW, token=None, headers={"Authorization": f"Basic {ADMIN}"}), 403)
    assert_error(get(client, pipe, WINDOW, token=None, headers={"Authorization": "Bearer "}), 403)
    assert_error(get(client, pipe, WINDOW, token="%C3%A9t%C3%A9"), 403)  # non-ASCII token: 403, not 500
    assert_error(get(client, pipe, WINDOW + "&token=", token=None), 403)


def test_token_error_never_echoes_the_token(client):
    r = get(client, "event_metrics", WINDOW, token="tok-secret-guess")
    assert "tok-secret-guess" not in r.text
    r = get(client, "event_metrics", WINDOW, token=TOKENS["tracker"][0])
    assert TOKENS["tracker"][0] not in r.text and "tracker" in r.json()["error"]


def test_header_token_wins_over_query(client):
    r = get(client, "event_metrics", WINDOW, token="wrong", headers={"Authorization": f"Bearer {ADMIN}"})
    assert _allowed(r)


def test_admin_token_from_home_when_not_configured(tmp_path):
    s = Settings(home=tmp_path / "h")
    token = s.resolved_admin_token()
    with TestClient(create_app(s)) as c:
        assert _allowed(get(c, "event_metrics", WINDOW, token=token))
        assert not _allowed(get(c, "event_metrics", WINDOW, token="p.x"))


def test_tokens_file_reloaded_on_change(settings, client):
    new = "tok-new-token-0987654321"
    assert not _allowed(get(client, "event_metrics", WINDOW, token=new))
    write_tokens(settings.tokens_file, {"new": (new, ["PIPES:READ:event_metrics"])})
    assert _allowed(get(client, "event_metrics", WINDOW, token=new))
    assert not _allowed(get(client, "event_metrics", WINDOW, token=TOKENS["reader"][0]))  # removed
    settings.tokens_file.write_text("this is [not toml")  # a broken edit keeps the previous tokens
    assert _allowed(get(client, "event_metrics", WINDOW, token=new))
    assert _allowed(get(client, "event_metrics", WINDOW, token=ADMIN))


@pytest.mark.parametrize("text", [
    "not toml [", '[[tokens]]\nname = "x"\n', '[[tokens]]\ntoken = ""\n', '[[tokens]]\ntoken = "t"\nscopes = "PIPES:READ"\n',
    "tokens = 3\n",
])
def test_invalid_tokens_file_fails_at_start(tmp_path, text):
    f = tmp_path / "t.toml"
    f.write_text(text)
    with pytest.raises(TokensFileError):
        create_app(Settings(home=tmp_path / "h", admin_token=ADMIN, tokens_file=f))
    with pytest.raises(TokensFileError):
        create_app(Settings(home=tmp_path / "h", admin_token=ADMIN, tokens_file=tmp_path / "missing.toml"))


# ----------------------------------------------------------------------------- 404 / 405


@pytest.mark.parametrize("path", [
    "/v0/pipes/nope.json", "/v0/pipes/session_metrics.xml", "/v0/pipes/session_metrics", "/v0/pipes/session_metrics.",
    "/v0/pipes/session_metrics.JSON", "/v0/pipes/Session_Metrics.json", "/v0/pipes/session_metrics.json/extra",
    "/v0/pipes/session_metrics.json.json", "/v0/pipes/", "/v0/pipes", "/v0/nothing", "/", "/v1/pipes/session_metrics.json",
])
def test_unknown_paths_are_404(client, path):
    for q in ("", f"?token={ADMIN}"):
        assert_error(client.get(path + q), 404)


def test_unknown_pipe_or_format_messages(client):
    assert_error(get(client, "nope", WINDOW), 404, "nope", "session_metrics")
    assert_error(get(client, "session_metrics", WINDOW, fmt="xml"), 404, "xml", ".json", ".parquet")
    assert_error(get(client, "session_metrics", WINDOW, fmt="xml", token=None), 404)  # before auth


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_other_methods_are_405(client, method):
    for pipe in PIPE_NAMES:
        for fmt in ("json", "csv", "ndjson", "parquet"):
            r = client.request(method, f"/v0/pipes/{pipe}.{fmt}?token={ADMIN}")
            assert_error(r, 405, method)
            assert r.headers["allow"] == "GET"
    for path in ("/health", "/ready", "/v0/pipes/openapi.json"):
        r = client.request(method, path)
        assert_error(r, 405)


# ----------------------------------------------------------------------------- 503 / health / ready


def test_nothing_published_is_503_not_500(client):
    for pipe in PIPE_NAMES:
        for fmt in ("json", "csv", "ndjson", "parquet"):
            assert_error(get(client, pipe, WINDOW, fmt=fmt), 503, "publish")
    assert client.get("/health").json() == {"status": "ok"}
    assert_error(client.get("/ready"), 503, "publish")


def test_pointer_to_missing_or_broken_file_is_503(settings, client):
    settings.snapshots_dir.mkdir(parents=True)
    (settings.snapshots_dir / "CURRENT").write_text(json.dumps({"snapshot_id": "x", "file": "x.duckdb"}))
    assert_error(get(client, "event_metrics", WINDOW), 503)
    (settings.snapshots_dir / "x.duckdb").write_bytes(b"not a database at all" * 100)
    client.app.state.snapshots.check_interval = 0
    assert_error(get(client, "event_metrics", WINDOW), 503, "cannot be read")
    assert_error(client.get("/ready"), 503)


def test_ready_with_a_snapshot_lacking_marts_is_503(settings, client):
    fake_snapshot(settings, "snap-a", marts=False)
    assert_error(client.get("/ready"), 503, "snap-a", "lacks the marts")


def test_health_needs_no_token_and_no_data(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200
    assert client.head("/ready").status_code == 503


def test_serve_prints_a_generated_admin_token_once(tmp_path, monkeypatch, capsys):
    import serving.server as server

    runs = []
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kw: runs.append(kw))
    s = Settings(home=tmp_path / "h", admin_token=None)
    server.serve(port=9, settings=s)
    out = capsys.readouterr().out
    token = s.admin_token_path.read_text().strip()
    assert token in out and oct(s.admin_token_path.stat().st_mode & 0o777) == "0o600"
    server.serve(port=9, settings=s)
    assert token not in capsys.readouterr().out  # printed on the first start only
    assert runs[0]["port"] == 9 and runs[0]["host"] == "127.0.0.1"


# ----------------------------------------------------------------------------- headers


def test_request_id_on_every_response(client):
    for r in (client.get("/health"), client.get("/ready"), get(client, "event_metrics", WINDOW),
              get(client, "event_metrics", "limit=0"), get(client, "event_metrics", token=None),
              client.get("/v0/pipes/nope.json"), client.post("/v0/pipes/event_metrics.json")):
        assert UUID_RE.match(r.headers["x-request-id"]), r.headers
    ids = {client.get("/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("sent, echoed", [
    ("abc-123", True), ("0f8fad5b-d9cb-469f-a165-70867728950e", True), ("req_1.2:3", True),
    ("x" * 64, True), ("x" * 65, False), ("has space", False), ("", False), ("<script>", False),
    ("-leading-dash", False), ("a\tb", False),
])
def test_client_request_id_echoed_only_when_sane(client, sent, echoed):
    r = client.get("/health", headers={"X-Request-ID": sent})
    if echoed:
        assert r.headers["x-request-id"] == sent
    else:
        assert UUID_RE.match(r.headers["x-request-id"])


def test_snapshot_headers_on_every_response_and_switch(settings, client):
    client.app.state.snapshots.check_interval = 0
    assert "x-engage-snapshot" not in client.get("/health").headers  # nothing published yet
    fake_snapshot(settings, "snap-a", "2023-05-06 07:08:09.999")
    responses = [client.get("/health"), get(client, "event_metrics", "limit=0"),
                 get(client, "event_metrics", token=None), client.get("/v0/pipes/nope.json"),
                 client.post("/v0/pipes/event_metrics.json")]
    for r in responses:
        assert r.headers["x-engage-snapshot"] == "snap-a"
        assert r.headers["x-engage-watermark"] == "2023-05-06 07:08:09"
    fake_snapshot(settings, "snap-b", "2024-01-02 03:04:05")
    r = client.get("/health")
    assert (r.headers["x-engage-snapshot"], r.headers["x-engage-watermark"]) == ("snap-b", "2024-01-02 03:04:05")


def test_snapshot_pointer_checked_at_most_every_half_second(settings, client):
    manager: SnapshotManager = client.app.state.snapshots
    assert manager.check_interval == 0.5
    fake_snapshot(settings, "snap-a")
    time.sleep(0.6)
    assert client.get("/health").headers["x-engage-snapshot"] == "snap-a"
    fake_snapshot(settings, "snap-b")
    assert client.get("/health").headers["x-engage-snapshot"] == "snap-a"  # within 0.5 s: cached
    time.sleep(0.6)
    assert client.get("/health").headers["x-engage-snapshot"] == "snap-b"


# ----------------------------------------------------------------------------- snapshot reader


def test_snapshot_manager_one_snapshot_per_request(settings):
    m = SnapshotManager(settings, check_interval=0)
    with pytest.raises(SnapshotUnavailable):
        with m.acquire():
            pass
    fake_snapshot(settings, "snap-a")
    with m.acquire() as a:
        fake_snapshot(settings, "snap-b")
        with m.acquire() as b:
            # the request that started on snap-a keeps reading snap-a, even though it was replaced
            assert a.cursor.execute("SELECT snapshot_id FROM snapshot_info").fetchone() == ("snap-a",)
            assert b.cursor.execute("SELECT snapshot_id FROM snapshot_info").fetchone() == ("snap-b",)
        assert (a.snapshot_id, b.snapshot_id) == ("snap-a", "snap-b")
    # snap-a's connection is closed once its last request is done; snap-b keeps serving
    with m.acquire() as c:
        assert c.snapshot_id == "snap-b"
    m.close()


def test_snapshot_manager_keeps_serving_when_new_snapshot_is_broken(settings):
    m = SnapshotManager(settings, check_interval=0)
    fake_snapshot(settings, "snap-a")
    with m.acquire() as a:
        assert a.snapshot_id == "snap-a"
    bad = settings.snapshots_dir / "snap-bad.duckdb"
    bad.write_bytes(b"garbage" * 1000)
    (settings.snapshots_dir / "CURRENT").write_text(json.dumps({"snapshot_id": "snap-bad", "file": bad.name}))
    with m.acquire() as a:
        assert a.snapshot_id == "snap-a"
    fake_snapshot(settings, "snap-c")
    with m.acquire() as c:
        assert c.snapshot_id == "snap-c"
    m.close()


def test_snapshot_file_removed_while_open_keeps_working(settings):
    m = SnapshotManager(settings, check_interval=0)
    path = fake_snapshot(settings, "snap-a")
    with m.acquire() as a:
        assert a.snapshot_id == "snap-a"
    path.unlink()  # pruned by the publisher: the open connection still reads it
    with m.acquire() as a:
        assert a.cursor.execute("SELECT count(*) FROM snapshot_info").fetchone() == (1,)
    m.close()


# ----------------------------------------------------------------------------- error handler


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def test_unexpected_errors_are_json_500_without_internals(settings):
    app = create_app(settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail /etc/passwd")

    @app.get("/typed")
    def typed(n: int = Query(...)):
        return {"n": n}

    with TestClient(app, raise_server_exceptions=False) as c:
        handler = _ListHandler()
        logging.getLogger("engage.serving").addHandler(handler)
        try:
            r = c.get("/boom?token=abc-secret")
        finally:
            logging.getLogger("engage.serving").removeHandler(handler)
        msg = assert_error(r, 500, "X-Request-ID")
        assert "secret" not in r.text and "passwd" not in r.text
        assert UUID_RE.match(r.headers["x-request-id"])
        logged = "\n".join(handler.lines)
        assert "RuntimeError" in logged and r.headers["x-request-id"] in logged and "abc-secret" not in logged
        assert msg
        assert_error(c.get("/typed?n=abc"), 400, "n")
        assert_error(c.get("/typed"), 400, "n")


# ----------------------------------------------------------------------------- OpenAPI


def test_pipes_openapi_describes_every_pipe_and_parameter(client):
    r = client.get("/v0/pipes/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {f"/v0/pipes/{p}.{{format}}" for p in PIPE_NAMES}
    assert {"BearerToken", "QueryToken"} <= set(doc["components"]["securitySchemes"])
    for name, pipe in PIPES.items():
        op = doc["paths"][f"/v0/pipes/{name}.{{format}}"]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        assert set(params) == {"format"} | {p.name for p in pipe.params}
        assert params["format"]["schema"]["enum"] == ["json", "csv", "ndjson", "parquet"]
        assert {"start_date", "end_date", *pipe.filters} <= set(params)
        assert ("time_bucket" in params) == pipe.time_series
        assert ("limit" in params) == (name in ("geographic_distribution", "event_metrics"))
        row = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"]["items"]
        assert list(row["properties"]) == [c.name for c in pipe.columns]
        assert op["description"] == pipe.description
        for status in ("400", "403", "404", "503"):
            assert status in op["responses"]
    assert doc["paths"]["/v0/pipes/active_users.{format}"]["get"]["parameters"][-1]["name"] == "segment_by_platform"


def test_fastapi_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    doc = client.get("/openapi.json").json()
    assert {f"/v0/pipes/{p}.{{format}}" for p in PIPE_NAMES} <= set(doc["paths"])
    assert {"/health", "/ready"} <= set(doc["paths"])


# ----------------------------------------------------------------------------- logs


@pytest.mark.parametrize("line, secret", [
    ('127.0.0.1:5 - "GET /v0/pipes/a.json?token=SECRET1&x=1 HTTP/1.1" 200', "SECRET1"),
    ('"GET /v0/pipes/a.json?x=1&token=SECRET2 HTTP/1.1"', "SECRET2"),
    ('"GET /v0/pipes/a.json?%74oken=SECRET3 HTTP/1.1"', "SECRET3"),
    ('"GET /v0/pipes/a.json?TOKEN=SECRET4"', "SECRET4"),
    ("Authorization: Bearer SECRET5", "SECRET5"),
])
def test_redact(line, secret):
    out = redact(line)
    assert secret not in out and "[REDACTED]" in out


def test_redaction_filter_on_access_log_records():
    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("1.2.3.4:5", "GET", "/v0/pipes/a.json?start_date=x&token=SECRET6", "1.1", 200), None)
    assert RedactTokens().filter(rec)
    assert "SECRET6" not in rec.getMessage() and "start_date=x" in rec.getMessage()
    config = uvicorn_log_config()
    assert all("redact_tokens" in h["filters"] for h in config["handlers"].values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_uvicorn_and_never_logs_tokens(tmp_path):
    port = _free_port()
    home = tmp_path / "home"
    env = {**os.environ, "ENGAGE_HOME": str(home), "ENGAGE_ADMIN_TOKEN": ADMIN}
    env.pop("ENGAGE_TOKENS_FILE", None)
    code = f"from serving.server import serve; serve(port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import httpx

        deadline = time.time() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert r.json() == {"status": "ok"}
        r = httpx.get(f"http://127.0.0.1:{port}/v0/pipes/event_metrics.json?token={ADMIN}&limit=5")
        assert r.status_code == 503
        r = httpx.get(f"http://127.0.0.1:{port}/v0/pipes/event_metrics.json?%74oken={ADMIN}")
        r = httpx.get(f"http://127.0.0.1:{port}/v0/pipes/event_metrics.json",
                      headers={"Authorization": f"Bearer {ADMIN}", "X-Request-ID": str(uuid.uuid4())})
        assert r.status_code == 503
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "GET /v0/pipes/event_metrics.json?" in out  # the access log is on...
    assert "limit=5" in out
    assert ADMIN not in out  # ... and never shows a token


# ----------------------------------------------------------------------------- docs

API_MD = Path(__file__).resolve().parents[1] / "docs" / "API.md"
# The Tinybird project's own examples, with only the host changed.
SEED_EXAMPLES = [
    'curl -X GET "http://127.0.0.1:8000/v0/pipes/session_metrics.json?token=$TB_ADMIN_TOKEN&start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&time_bucket=day&platform=web"',
    'curl -X GET "http://127.0.0.1:8000/v0/pipes/user_engagement_time_series.json?token=$TB_ADMIN_TOKEN&start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&time_bucket=hour&event_type=page_view"',
    'curl -X GET "http://127.0.0.1:8000/v0/pipes/geographic_distribution.json?token=$TB_ADMIN_TOKEN&start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&event_type=page_view"',
    'curl -X GET "http://127.0.0.1:8000/v0/pipes/active_users.json?token=$TB_ADMIN_TOKEN&start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&time_bucket=hour"',
    'curl -X GET "http://127.0.0.1:8000/v0/pipes/event_metrics.json?token=$TB_ADMIN_TOKEN&start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59"',
]


def test_api_md_pipe_reference_is_generated_from_the_declarations():
    from serving.docs import render

    text = API_MD.read_text(encoding="utf-8")
    assert render(text) == text, "docs/API.md is stale: run `python -m serving.docs`"
    for pipe in PIPES.values():
        assert f"### {pipe.name}" in text
        for p in pipe.params:
            assert f"| `{p.name}` |" in text
        for c in pipe.columns:
            assert f"| `{c.name}` | {c.type} |" in text


@pytest.mark.parametrize("line", SEED_EXAMPLES)
def test_api_md_has_the_seed_examples_verbatim(client, line):
    assert line in API_MD.read_text(encoding="utf-8")
    path = line.split('"http://127.0.0.1:8000', 1)[1].rstrip('"').replace("$TB_ADMIN_TOKEN", ADMIN)
    assert_error(client.get(path), 503)  # valid and authorized (no data in this home)
