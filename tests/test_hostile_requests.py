"""Hostile requests against the FastAPI app: no input yields a 5xx, every refusal is a JSON
``{"error", "documentation"}`` 4xx, and injections change nothing (docs/RELIABILITY.md, "Bad requests").

The pipes run on ``published_home`` (real published marts); the Events API on a fresh home.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, unquote, urlencode

import pytest
from fastapi.testclient import TestClient

from engage.loader import connect_warehouse, load_pending
from engage.settings import Settings
from serving.app import create_app
from serving.params import MAX_BUCKETS
from serving.pipes import PIPES

ADMIN = "hostile-admin-token-0123456789"
READER = "hostile-reader-token-0123456789"
TRACKER = "hostile-tracker-token-0123456789"
WINDOW = {"start_date": "2025-01-20 00:00:00", "end_date": "2025-02-20 23:59:59"}  # the bulk of the edge data
FORMATS = ("json", "csv", "ndjson", "parquet")

# Each comma-free (a filter splits on commas), each aimed at SQL built from strings.
INJECTIONS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    "web' OR platform<>'",
    "'; DROP TABLE user_engagement_daily; --",
    "\"; DROP TABLE snapshot_info; --",
    "1; SELECT * FROM duckdb_tables()",
    "' UNION SELECT table_name FROM information_schema.tables --",
    "') OR list_contains(['x'] ['x']) OR ('",
    "' || (SELECT version()) || '",
    "$$ OR TRUE $$",
    "?",
    "$1",
    "\\' OR 1=1 --",
    "web\x00' OR 1=1 --",
    "%27%20OR%201%3D1",
    "*/ OR 1=1 /*",
    "{{7*7}} ${jndi:ldap://x/a}",
]


def write_tokens(path: Path) -> Path:
    path.write_text(
        f'[[tokens]]\nname = "reader"\ntoken = "{READER}"\nscopes = ["PIPES:READ"]\n'
        f'[[tokens]]\nname = "tracker"\ntoken = "{TRACKER}"\nscopes = ["DATASOURCES:APPEND:user_events"]\n'
    )
    return path


@pytest.fixture(scope="module")
def published(request):
    return request.getfixturevalue("published_home")


@pytest.fixture(scope="module")
def client(published, tmp_path_factory):
    tokens = write_tokens(tmp_path_factory.mktemp("hostile-tokens") / "tokens.toml")
    settings = published.settings.model_copy(update={"admin_token": ADMIN, "tokens_file": tokens})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def get(client, path: str, params=None, token: str | None = ADMIN, headers=None):
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, params=params, headers={**hdrs, **(headers or {})})


def raw_get(client, target: str, token: str = ADMIN) -> SimpleNamespace:
    """A GET with any request target, straight to the ASGI app (httpx refuses URLs over 64 KiB)."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    client.portal.call(client.app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return SimpleNamespace(status_code=start["status"], text=body.decode(), json=lambda: json.loads(body),
                           headers={k.decode().lower(): v.decode() for k, v in start["headers"]})


def assert_error(r, status: int | tuple[int, ...], *words: str) -> dict:
    """A refusal: the expected 4xx, JSON {"error", "documentation"}, naming what is wrong."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "documentation"} and body["error"] and body["documentation"]
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body


def fingerprint(published) -> dict:
    """What an injection could change: the snapshot files, the pointer, the warehouse."""
    s = published.settings
    files = sorted(p for p in s.snapshots_dir.iterdir() if p.is_file()) + [s.warehouse_path]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def answers(client) -> dict:
    """Every pipe's data over the window, unfiltered."""
    out = {}
    for name in PIPES:
        r = get(client, f"/v0/pipes/{name}.json", WINDOW)
        assert r.status_code == 200, r.text
        out[name] = r.json()["data"]
    return out


# ----------------------------------------------------------------------------- SQL injection

def param_cases():
    for pipe in PIPES.values():
        for p in pipe.params:
            yield pipe.name, p.name
        yield pipe.name, "token"


@pytest.mark.parametrize("pipe,param", list(param_cases()))
def test_sql_injection_in_every_parameter_of_every_pipe(client, published, tmp_path, pipe, param):
    declared = {p.name: p for p in PIPES[pipe].params}
    before = fingerprint(published)
    pwned = tmp_path / "pwned"
    payloads = INJECTIONS + [f"'; COPY (SELECT 42) TO '{pwned}.csv'; --", f"'; ATTACH '{pwned}.duckdb' AS p; --",
                             f"' || (SELECT content FROM read_text('{published.settings.warehouse_path}')) || '"]
    empty = None
    if param in declared and declared[param].is_filter:
        empty = get(client, f"/v0/pipes/{pipe}.json", {**WINDOW, param: "absent-value"}).json()["data"]
    for payload in payloads:
        if param == "token":
            r = get(client, f"/v0/pipes/{pipe}.json", {**WINDOW, "token": payload}, token=None)
            assert_error(r, 403, "token")
            r = get(client, f"/v0/pipes/{pipe}.json", WINDOW, token=None, headers={"Authorization": f"Bearer {payload}"})
            assert_error(r, 403, "token")
            continue
        r = get(client, f"/v0/pipes/{pipe}.json", {**WINDOW, param: payload})
        if declared[param].is_filter:
            # A value like any other: it matches no event, so the answer is the empty one.
            assert r.status_code == 200, r.text
            assert r.json()["data"] == empty, payload
        else:
            assert_error(r, 400, param)
    assert not list(tmp_path.iterdir()), "an injection wrote a file"
    assert fingerprint(published) == before


def test_injections_change_no_answer(client, published):
    before, files = answers(client), fingerprint(published)
    for pipe in PIPES.values():
        for payload in INJECTIONS:
            query = {**WINDOW, **{p.name: payload for p in pipe.params if p.is_filter}}
            assert get(client, f"/v0/pipes/{pipe.name}.csv", query).status_code == 200
    assert answers(client) == before and fingerprint(published) == files


def test_a_filter_list_with_an_injection_piece_equals_the_list_without_it(client):
    for name in PIPES:
        plain = get(client, f"/v0/pipes/{name}.json", {**WINDOW, "platform": "web"}).json()["data"]
        mixed = get(client, f"/v0/pipes/{name}.json", {**WINDOW, "platform": "web,' OR 1=1 --,') OR ('1'='1"})
        assert mixed.status_code == 200 and mixed.json()["data"] == plain


# ----------------------------------------------------------------------------- paths

TRAVERSALS = [
    "/v0/pipes/..%2f..%2fetc%2fpasswd.json",
    "/v0/pipes/session_metrics.json%00.csv",
    "/v0/pipes/session_metrics%00.json",
    "/v0/pipes/%2e%2e/%2e%2e/etc/passwd.json",
    "/v0/pipes/%2e%2e%2f%2e%2e%2fwarehouse.duckdb",
    "/v0/pipes/..%5c..%5cwindows%5cwin.ini.json",
    "/v0/pipes/session_metrics.json%2f..%2f..%2fetc%2fpasswd",
    "/v0/pipes/session_metrics.%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/v0/pipes/session_metrics.json;.csv",
    "/v0/pipes/session_metrics.JSON",
    "/v0/pipes/session_metrics.json/",
    "/v0/pipes/session_metrics..json",
    "/v0/pipes/session_metrics.",
    "/v0/pipes/.json",
    "/v0/pipes/",
    "/v0/pipes//etc/passwd",
    "/v0/pipes/%ff%fe.json",
    "/v0/pipes/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd.json",
    "/v0/pipes/snapshot_info.json",
    "/v0/pipes/user_engagement_daily.json",
    "/v0/pipes/session_metrics.duckdb",
    "/v0/pipes/session_metrics.json.gz",
    "/v0/pipes/" + "a" * 10_000 + ".json",
    "/v0/pipes/session_metrics." + "j" * 10_000,
    "/%2e%2e/%2e%2e/etc/passwd",
    "/v0/events/..%2f..%2fetc%2fpasswd",
    "/health/..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS, ids=lambda p: p[:60])
def test_path_traversal_is_404(client, published, path):
    r = get(client, path, WINDOW)
    body = assert_error(r, 404)
    assert "root:" not in r.text and len(body["error"]) < 500
    assert published.settings.warehouse_path.name not in r.text or "warehouse.duckdb" in path


def test_an_encoded_but_legitimate_path_is_answered(client):
    assert get(client, "/v0/pipes/%73ession_metrics.json", WINDOW).status_code == 200  # %73 = "s"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND", "TRACE"])
def test_other_methods_on_a_pipe_are_refused(client, method):
    r = client.request(method, "/v0/pipes/session_metrics.json", params=WINDOW, headers={"Authorization": f"Bearer {ADMIN}"})
    assert_error(r, (404, 405))


# ----------------------------------------------------------------------------- sizes and repetitions

def test_100kB_query_strings(client):
    big = "x" * 100_000
    window = urlencode(WINDOW)
    # A long filter value, or 15,000 of them, is just a filter: it matches nothing.
    for value in (big, ",".join(f"p{i}" for i in range(15_000))):
        r = raw_get(client, f"/v0/pipes/event_metrics.json?{window}&platform={quote(value)}")
        assert r.status_code == 200 and r.json()["data"] == []
    r = raw_get(client, f"/v0/pipes/user_engagement_time_series.json?{window}&unknown={big}")
    assert r.status_code == 200  # unknown parameters are ignored
    for param in ("start_date", "end_date", "time_bucket", "limit", "group_by", "segment_by_platform"):
        pipe = {"limit": "event_metrics", "group_by": "geographic_distribution", "segment_by_platform": "active_users"}.get(
            param, "session_metrics")
        r = raw_get(client, f"/v0/pipes/{pipe}.json?{urlencode({**WINDOW, param: big})}")
        body = assert_error(r, 400, param)
        assert len(body["error"]) < 1000  # the value is shown shortened, not echoed whole
    assert_error(raw_get(client, f"/v0/pipes/session_metrics.json?{window}&token={big}", token=""), 403)
    assert_error(get(client, "/v0/pipes/session_metrics.json", WINDOW, token=big), 403)


def test_repeated_parameters(client):
    base = "/v0/pipes/user_engagement_time_series.json?"
    window = "start_date=2025-01-20&end_date=2025-02-20+23:59:59"
    # A filter repeated adds up; 10,000 repetitions are fine.
    many = "&".join(f"platform=p{i}" for i in range(10_000))
    r = raw_get(client, f"{base}{window}&{many}")
    assert r.status_code == 200 and all(row["event_count"] == 0 for row in r.json()["data"])
    # A scalar repeated takes its last value.
    day = raw_get(client, f"{base}{window}&time_bucket=hour&time_bucket=day")
    assert day.status_code == 200 and len(day.json()["data"]) == 32
    assert_error(raw_get(client, f"{base}{window}&time_bucket=day&time_bucket=%27%20OR%201=1"), 400, "time_bucket")
    assert raw_get(client, f"{base}start_date=bad&start_date=2025-01-20&end_date=2025-02-20").status_code == 200
    r = raw_get(client, f"{base}{window}&" + "&".join(["start_date=2025-01-20"] * 5_000))
    assert r.status_code == 200
    # Repeated tokens: one of them decides; never an error other than 403.
    for tokens in ((ADMIN, "bad"), ("bad", ADMIN), ("bad",) * 1000):
        r = raw_get(client, f"{base}{window}&" + "&".join(f"token={t}" for t in tokens), token="")
        assert r.status_code in (200, 403), r.text
        if r.status_code == 403:
            assert_error(r, 403, "token")


@pytest.mark.parametrize("value", ["\x00", "\ufffd", "\u202e", "é" * 1000, "\r\nSet-Cookie: a=b", "%00", "\\", "'", '"', "`"])
def test_odd_characters_in_every_parameter(client, value):
    for pipe in PIPES.values():
        for p in pipe.params:
            r = get(client, f"/v0/pipes/{pipe.name}.csv", {**WINDOW, p.name: value})
            assert r.status_code in (200, 400), (pipe.name, p.name, r.status_code, r.text[:200])
            if r.status_code == 400:
                assert_error(r, 400, p.name)
            else:
                assert p.is_filter
            assert "set-cookie" not in r.headers


# ----------------------------------------------------------------------------- windows and buckets

TIME_SERIES = [p.name for p in PIPES.values() if p.time_series]


@pytest.mark.parametrize("pipe", TIME_SERIES)
@pytest.mark.parametrize("bucket", ["hour", "day", "week", "month"])
def test_huge_windows_are_400_over_10000_buckets(client, pipe, bucket):
    r = get(client, f"/v0/pipes/{pipe}.json", {"start_date": "0001-01-01 00:00:00", "end_date": "9999-12-31 23:59:59",
                                                "time_bucket": bucket})
    assert_error(r, 400, "buckets", "10000")


def test_exactly_10000_hour_buckets_is_fine_and_10001_is_not(client):
    start = datetime(2024, 6, 1)
    last = start + timedelta(hours=MAX_BUCKETS - 1)
    params = {"start_date": start.isoformat(" "), "end_date": last.isoformat(" "), "time_bucket": "hour"}
    r = get(client, "/v0/pipes/user_engagement_time_series.json", params)
    assert r.status_code == 200 and r.json()["rows"] == MAX_BUCKETS
    params["end_date"] = (last + timedelta(hours=1)).isoformat(" ")
    assert_error(get(client, "/v0/pipes/user_engagement_time_series.json", params), 400, "10001")


@pytest.mark.parametrize("params,status", [
    ({"start_date": "0001-01-01", "end_date": "9999-12-31 23:59:59"}, 200),  # ranking pipes: any window
    ({"end_date": "0001-01-01 00:00:00"}, 200),  # start_date would be before year 1
    ({"start_date": "9999-12-31 23:00:00", "end_date": "9999-12-31 23:59:59"}, 200),
    ({"start_date": "9999-12-31 23:59:59"}, 400),  # after the default end (now)
    ({"start_date": "2025-01-01", "end_date": "2024-12-31"}, 400),
    ({"start_date": "0000-01-01"}, 400),
    ({"start_date": "10000-01-01"}, 400),
    ({"start_date": "2025-02-30"}, 400),
    ({"start_date": "2025-01-01T00:00:00Z"}, 400),
    ({"start_date": "2025-01-01 00:00:00.000"}, 400),
    ({"start_date": "２０２５-01-01"}, 400),
    ({"start_date": "2025-01-01 24:00:00"}, 400),
    ({"start_date": "-2025-01-01"}, 400),
    ({"start_date": "1e20"}, 400),
    ({"limit": "0"}, 400), ({"limit": "10001"}, 400), ({"limit": "-1"}, 400), ({"limit": "1e3"}, 400),
    ({"limit": "99999999999999999999999"}, 400), ({"limit": "١٠"}, 400), ({"limit": "10000"}, 200),
    ({"limit": " 5"}, 400), ({"limit": "5 "}, 400), ({"limit": "0x10"}, 400),
])
def test_extreme_dates_and_limits(client, params, status):
    r = get(client, "/v0/pipes/event_metrics.json", params)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        assert_error(r, 400)


def test_extreme_windows_on_time_series(client):
    for pipe in TIME_SERIES:
        for params in ({"start_date": "9999-12-31 00:00:00", "end_date": "9999-12-31 23:59:59", "time_bucket": "hour"},
                       {"start_date": "0001-01-01 00:00:00", "end_date": "0001-01-05 23:59:59", "time_bucket": "week"},
                       {"start_date": "9990-01-01", "end_date": "9999-12-31 23:59:59", "time_bucket": "month"},
                       {"end_date": "0001-01-01 00:00:00", "time_bucket": "hour"}):
            r = get(client, f"/v0/pipes/{pipe}.json", params)
            assert r.status_code == 200, (pipe, params, r.text[:300])


# ----------------------------------------------------------------------------- headers

@pytest.mark.parametrize("headers", [
    {"X-Request-ID": "a" * 10_000},
    {"X-Request-ID": "abc\r\nSet-Cookie: x=y"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic " + "A" * 100_000},
    {"Authorization": "Bearer " + "'; DROP TABLE x; --"},
    {"Authorization": b"Bearer \xff\xfe"},
    {"Accept": "application/x-evil"},
    {"Accept-Encoding": "gzip;q=1.0, br, zstd, " + "x" * 10_000},
    {"Content-Type": "multipart/form-data; boundary=" + "-" * 5000},
])
def test_hostile_headers(client, headers):
    hdrs = {"Authorization": f"Bearer {ADMIN}", **headers}
    r = client.get("/v0/pipes/session_metrics.json", params=WINDOW, headers=hdrs)
    assert r.status_code in (200, 403), r.text[:200]
    if r.status_code == 403:
        assert_error(r, 403)
    assert len(r.headers["X-Request-ID"]) <= 64 and "\n" not in r.headers["X-Request-ID"]
    assert "set-cookie" not in r.headers


# ----------------------------------------------------------------------------- POST /v0/events

@pytest.fixture
def events(engage_home, tmp_path):
    settings = Settings(home=engage_home.home, admin_token=ADMIN, tokens_file=write_tokens(tmp_path / "tokens.toml"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c, settings


def event_line(i: int) -> bytes:
    return json.dumps({"timestamp": "2025-03-01 12:00:00", "user_id": f"u{i}", "event_type": "click",
                       "session_id": f"s{i}", "duration": i}).encode()


def post(client, body: bytes, headers=None, params="name=user_events&wait=true", token=TRACKER):
    return client.post(f"/v0/events?{params}", content=body,
                       headers={"Authorization": f"Bearer {token}", **(headers or {})})


def accounted(settings: Settings) -> tuple[int, int]:
    load_pending(settings)
    con = connect_warehouse(settings)
    try:
        return con.execute("SELECT (SELECT count(*) FROM raw.user_events), "
                           "(SELECT count(*) FROM raw.user_events_quarantine)").fetchone()
    finally:
        con.close()


def test_wrong_content_types_are_still_validated_line_by_line(events):
    client, settings = events
    good = event_line(1) + b"\n" + event_line(2) + b"\n"
    bodies = [
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"timestamp=2025-03-01&user_id=u", 0, 1),
        ({"Content-Type": "multipart/form-data; boundary=XyZ"},
         b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + event_line(3) + b"\r\n--XyZ--\r\n", 1, 3),
        ({"Content-Type": "application/json"}, b"[" + event_line(4) + b"," + event_line(5) + b"]", 0, 1),
        ({"Content-Type": "application/json"}, json.dumps({"data": [1]}).encode(), 0, 1),
        ({"Content-Type": "text/plain"}, good, 2, 0),
        ({"Content-Type": "application/octet-stream"}, bytes(range(256)) * 4, 0, 5),
        ({"Content-Type": "application/x-ndjson; charset=latin-1"}, event_line(6).replace(b'"u6"', b'"\xe9"') + b"\n", 0, 1),
        ({"Content-Type": "application/xml"}, b"<events><e/></events>", 0, 1),
        ({"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + bytes(64), 0, 3),
        ({}, b"", 0, 0),
        ({}, b"\n\r\n   \n", 0, 0),
    ]
    total_ok = total_bad = 0
    for headers, body, ok, bad in bodies:
        r = post(client, body, headers)
        assert r.status_code == 200, (headers, r.text)
        assert r.json() == {"successful_rows": ok, "quarantined_rows": bad}, (headers, body[:60])
        total_ok, total_bad = total_ok + ok, total_bad + bad
    assert accounted(settings) == (total_ok, total_bad)  # every line is loaded or quarantined


def zeros_bomb(size: int) -> bytes:
    member = gzip.compress(bytes(1024 * 1024), compresslevel=9, mtime=0)
    return member * (size // (1024 * 1024))


@pytest.mark.parametrize("body,status,words", [
    (zeros_bomb(1024 ** 3), 413, "Decompressed"),  # 1 GiB of zeros in ~1 MB
    (gzip.compress(b"\n" * (64 * 1024 * 1024), 9), 413, "Decompressed"),  # 64 MiB of blank lines in ~64 KB
    (gzip.compress(b"{}\n" * (4 * 1024 * 1024), 9), 413, "Decompressed"),  # 12 MiB of rows in ~12 KB
    (gzip.compress(event_line(1) + b"\n")[:-9], 400, "truncated"),
    (gzip.compress(event_line(1) + b"\n")[:10], 400, "gzip"),
    (b"\x1f\x8b" + bytes(100), 400, "gzip"),
    (b"plain text, not gzip", 400, "gzip"),
    (zlib.compress(event_line(1)), 400, "gzip"),  # zlib/deflate, not gzip
])
def test_gzip_bombs_and_broken_gzip(events, body, status, words):
    client, settings = events
    r = post(client, body, {"Content-Encoding": "gzip"})
    assert_error(r, status, words)
    assert accounted(settings) == (0, 0)  # nothing half-accepted


def test_every_gzip_member_is_read(events):
    client, settings = events
    body = b"".join(gzip.compress(event_line(i) + b"\n") for i in range(50)) + gzip.compress(b"")
    r = post(client, body, {"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {"successful_rows": 50, "quarantined_rows": 0}
    assert_error(post(client, gzip.compress(event_line(1)) + b"trailing junk", {"Content-Encoding": "gzip"}), 400, "gzip")
    assert accounted(settings) == (50, 0)


def test_gzip_within_the_limit_is_accepted(events):
    client, settings = events
    body = b"".join(event_line(i) + b"\n" for i in range(1000)) + b"not json\n"
    r = post(client, gzip.compress(body), {"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {"successful_rows": 1000, "quarantined_rows": 1}
    assert accounted(settings) == (1000, 1)


@pytest.mark.parametrize("headers,status,words", [
    ({"Content-Encoding": "br"}, 400, "Content-Encoding"),
    ({"Content-Encoding": "gzip, gzip"}, 400, "Content-Encoding"),
    ({"Content-Encoding": "deflate"}, 400, "Content-Encoding"),
    ({"Content-Encoding": "' OR 1=1 --"}, 400, "Content-Encoding"),
    ({"Content-Encoding": "x" * 50_000}, 400, "Content-Encoding"),
    ({"Content-Length": str(10 ** 12)}, (400, 413), ""),
])
def test_bad_encodings_and_lengths(events, headers, status, words):
    client, settings = events
    r = post(client, event_line(1) + b"\n", headers)
    assert len(assert_error(r, status, words)["error"]) < 1000


def test_body_over_the_limit_is_413(events):
    client, settings = events
    assert_error(post(client, b"\n" * (10 * 1024 * 1024 + 1)), 413, "too large")


@pytest.mark.parametrize("params,status", [
    ("name=user_events'%20OR%201=1--", 404),
    ("name=..%2f..%2fetc%2fpasswd", 404),
    ("name=raw.user_events", 404),
    ("name=user_events%00", 404),
    ("name=" + "x" * 60_000, 404),
    ("name=user_events&wait=' OR 1=1", 400),
    ("name=user_events&wait=" + "t" * 60_000, 400),
    ("name=user_events&name=other", 404),
    ("name=other&name=user_events&wait=true", 200),
    ("", 400),
])
def test_events_parameters(events, params, status):
    client, settings = events
    r = post(client, event_line(1) + b"\n", params=params)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        body = assert_error(r, status)
        assert len(body["error"]) < 1000
