"""Limits and security of the HTTP API (docs/RELIABILITY.md, "Limits" and "Security"): rate limits
(429 + Retry-After + X-RateLimit-*), the concurrency caps under real bursts against a real uvicorn
server, CORS, security headers, tokens never logged nor echoed, the admin token file's mode and the
scoped-token matrix over every endpoint.

The pipes answer from ``published_home`` (real marts published by the real pipeline); the Events API
runs on a fresh home (a posted batch would change the shared published home).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from engage.loader import connect_warehouse, load_pending
from engage.settings import Settings
from serving.app import create_app
from serving.auth import TokensFileError
from serving.errors import ApiError
from serving.limits import ConcurrencyGate, Rate, RateLimiter
from serving.middleware import API_CSP
from serving.pipes import PIPES
from test_serving_api import _free_port, _ListHandler  # tests/ is on sys.path (conftest.py)

ADMIN = "limits-admin-token-0123456789"
TOKENS = {  # name: (token, scopes, extra TOML lines)
    "reader": ("limits-reader-token-0123456789", ["PIPES:READ"], ""),
    "sessions": ("limits-sessions-token-0123456789", ["PIPES:READ:session_metrics"], ""),
    "events_only": ("limits-eventmetrics-token-0123456789", ["PIPES:READ:event_metrics"], ""),
    "tracker": ("limits-tracker-token-0123456789", ["DATASOURCES:APPEND:user_events"], ""),
    "slow": ("limits-slow-token-0123456789", ["PIPES:READ"], "rate_limit_per_second = 1\nrate_limit_burst = 1\n"),
    "unlimited": ("limits-unlimited-token-0123456789", ["PIPES:READ"], "rate_limit_per_second = 0\n"),
}
SECRETS = [ADMIN] + [t for t, _, _ in TOKENS.values()]
WINDOW = {"start_date": "2025-01-20 00:00:00", "end_date": "2025-02-20 23:59:59"}  # the bulk of the edge data
PIPE = "/v0/pipes/session_metrics.json"
OTHER_ADDRESS = ("127.0.0.2", 50000)  # a second client address, as TestClient reports it (no traffic)


def write_tokens(path: Path) -> Path:
    lines = []
    for name, (token, scopes, extra) in TOKENS.items():
        lines += ["[[tokens]]", f'name = "{name}"', f'token = "{token}"', f"scopes = {json.dumps(scopes)}", extra]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def published(request):
    return request.getfixturevalue("published_home")


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("limits-tokens") / "tokens.toml")


@pytest.fixture
def make_settings(published, tokens_file):
    """Settings of the published home with our tokens and the given overrides."""

    def make(**overrides) -> Settings:
        return published.settings.model_copy(update={"admin_token": ADMIN, "tokens_file": tokens_file, **overrides})

    return make


@pytest.fixture
def fresh_settings(engage_home, tokens_file) -> Settings:
    return Settings(home=engage_home.home, admin_token=ADMIN, tokens_file=tokens_file)


def get(client, path: str = PIPE, token: str | None = ADMIN, how: str = "header", params=None, **kw):
    params = {**WINDOW, **(params or {})}
    headers = dict(kw.pop("headers", {}))
    if token is not None and how == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        params["token"] = token
    return client.get(path, params=params, headers=headers, **kw)


def assert_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "documentation"} and body["error"] and body["documentation"]
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body["error"]


def rate_headers(r) -> tuple[int, int, int]:
    return int(r.headers["x-ratelimit-limit"]), int(r.headers["x-ratelimit-remaining"]), int(r.headers["x-ratelimit-reset"])


# ----------------------------------------------------------------------------- rate limits


def test_rate_limit_429_with_headers_and_recovery_after_retry_after(make_settings):
    with TestClient(create_app(make_settings(rate_limit_per_second=2, rate_limit_burst=3))) as c:
        seen = []
        for _ in range(3):
            r = get(c, token=TOKENS["reader"][0])
            assert r.status_code == 200, r.text
            seen.append(rate_headers(r))
        assert [(limit, remaining) for limit, remaining, _ in seen] == [(3, 2), (3, 1), (3, 0)]
        assert all(1 <= reset <= 2 for _, _, reset in seen)  # 3 requests at 2/s: full again within 1.5 s
        r = get(c, token=TOKENS["reader"][0])
        msg = assert_error(r, 429, "`reader`", "2 requests/s", "bursts of 3", "ENGAGE_RATE_LIMIT_PER_SECOND", "Retry-After")
        assert TOKENS["reader"][0] not in r.text
        retry_after = int(r.headers["retry-after"])
        assert retry_after >= 1 and rate_headers(r)[:2] == (3, 0)
        assert "slowly" in msg
        time.sleep(retry_after)
        r = get(c, token=TOKENS["reader"][0])
        assert r.status_code == 200 and rate_headers(r)[1] >= 0


def test_rate_limits_are_per_token_and_tokens_may_have_their_own(make_settings):
    with TestClient(create_app(make_settings(rate_limit_per_second=1, rate_limit_burst=2))) as c:
        for _ in range(2):
            assert get(c, token=TOKENS["reader"][0]).status_code == 200
        assert_error(get(c, token=TOKENS["reader"][0]), 429)
        # Other tokens have their own buckets, through the header or the query string alike.
        for token in (ADMIN, TOKENS["sessions"][0]):
            for how in ("header", "query"):
                r = get(c, token=token, how=how)
                assert r.status_code == 200, r.text
        assert_error(get(c, token=ADMIN), 429)  # ... which run out in their turn
        # A token's own limit from the tokens file replaces the default.
        assert rate_headers(get(c, token=TOKENS["slow"][0]))[:2] == (1, 0)
        assert_error(get(c, token=TOKENS["slow"][0]), 429, "`slow`", "rate_limit_per_second", "tokens file")
        for _ in range(20):  # rate_limit_per_second = 0: no limit for this token
            r = get(c, token=TOKENS["unlimited"][0])
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers


def test_refused_requests_count_too_and_a_scope_error_is_still_a_403(make_settings):
    with TestClient(create_app(make_settings(rate_limit_per_second=1, rate_limit_burst=2))) as c:
        for _ in range(2):
            assert_error(get(c, "/v0/pipes/active_users.json", token=TOKENS["sessions"][0]), 403, "scope")
        assert_error(get(c, "/v0/pipes/active_users.json", token=TOKENS["sessions"][0]), 429)
        assert_error(get(c, token=TOKENS["sessions"][0]), 429)  # the same bucket, whatever the pipe


def test_requests_without_a_valid_token_are_limited_per_client_address(make_settings):
    app = create_app(make_settings(rate_limit_anonymous_per_second=1, rate_limit_anonymous_burst=2))
    with TestClient(app) as c, TestClient(app, client=OTHER_ADDRESS) as other:
        bad = "not-a-token-" + "x" * 20
        r1, r2 = get(c, token=bad), get(c, token=None)
        for r in (r1, r2):
            assert_error(r, 403, "token")
            assert rate_headers(r)[0] == 2
        r = get(c, token=bad, how="query")
        msg = assert_error(r, 429, "without a valid token", "testclient", "ENGAGE_RATE_LIMIT_ANONYMOUS_PER_SECOND")
        assert bad not in r.text and bad not in msg and int(r.headers["retry-after"]) >= 1
        assert_error(c.post("/v0/events?name=user_events", content=b"{}"), 429)  # the events API counts too
        assert get(c, token=ADMIN).status_code == 200  # a valid token from the same address is not affected
        assert_error(get(other, token=bad), 403)  # nor is another address
        assert c.get("/health").status_code == 200  # health checks are never limited


def test_rate_limit_zero_turns_it_off(make_settings):
    with TestClient(create_app(make_settings(rate_limit_per_second=0, rate_limit_anonymous_per_second=0))) as c:
        for _ in range(30):
            r = get(c, token=ADMIN)
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers
            assert_error(get(c, token="nope"), 403)


def test_default_limits_fit_the_benchmarks():
    """bench/pipes.py sends everything with one admin token from 16 clients: ~500 req/s in
    docs/PERFORMANCE.md, and one process answered at most ~1,100 req/s of cached answers by hand
    (docs/API.md, "Limits"). The default token rate stays above that; the 16 clients are never more
    than the default query cap (test_sixteen_benchmark_clients_see_no_429_at_the_defaults)."""
    s = Settings()
    assert s.rate_limit_per_second >= 1500 and s.max_concurrent_queries >= 16
    assert s.max_concurrent_event_requests >= 4  # bench/events_throughput.py: 4 client threads
    assert Rate.of(s.rate_limit_per_second, s.rate_limit_burst).burst == 2 * s.rate_limit_per_second


def test_rate_limiter_arithmetic():
    limiter, rate = RateLimiter(), Rate(per_second=4, burst=2)
    v = [limiter.take("k", rate, now=100.0) for _ in range(3)]
    assert [x.allowed for x in v] == [True, True, False]
    assert [x.remaining for x in v] == [1, 0, 0]
    assert v[2].retry_after == 1 and v[0].retry_after == 0
    assert not limiter.take("k", rate, now=100.2).allowed  # one request comes back every 0.25 s
    assert limiter.take("k", rate, now=100.26).allowed
    assert limiter.take("k", rate, now=101.0).remaining == 1  # refilled (at most `burst`)
    # Many keys: the table stays bounded, full buckets are dropped first.
    small = RateLimiter(max_keys=100)
    for i in range(1000):
        assert small.take(f"a{i}", rate, now=200.0 + i).allowed
    assert len(small._full_at) <= 100


def test_tokens_file_rate_entries_are_validated(tmp_path):
    for extra in ('rate_limit_per_second = "fast"', "rate_limit_per_second = -1", "rate_limit_burst = 5",
                  "rate_limit_per_second = 1\nrate_limit_burst = 0", "rate_limit_per_second = nan"):
        f = tmp_path / "t.toml"
        f.write_text(f'[[tokens]]\nname = "x"\ntoken = "secret-x-0123456789"\nscopes = []\n{extra}\n')
        with pytest.raises(TokensFileError, match="rate_limit") as err:
            create_app(Settings(home=tmp_path / "h", admin_token=ADMIN, tokens_file=f))
        assert "secret-x" not in str(err.value)


# ----------------------------------------------------------------------------- concurrency caps


def test_concurrency_gate_waits_briefly_then_refuses():
    async def scenario():
        gate = ConcurrencyGate("pipe queries", limit=1, wait_seconds=0.05, setting="ENGAGE_MAX_CONCURRENT_QUERIES")
        entered, release = asyncio.Event(), asyncio.Event()

        async def holder():
            async with gate:
                entered.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await entered.wait()
        started = time.perf_counter()
        with pytest.raises(ApiError) as err:
            async with gate:
                pass
        waited = time.perf_counter() - started
        assert err.value.status_code == 429 and err.value.headers == {"Retry-After": "1"}
        assert "ENGAGE_MAX_CONCURRENT_QUERIES" in err.value.detail and 0.04 <= waited < 1.0
        # A slot freed within the wait goes to the waiter.
        gate.wait_seconds = 5

        async def free_soon():
            await asyncio.sleep(0.05)
            release.set()

        asyncio.create_task(free_soon())
        async with gate:
            assert gate.in_flight == 1
        await task
        # A waiter cancelled (client gone) leaks no slot.
        release.clear()
        task = asyncio.create_task(holder())
        await entered.wait()
        waiter = asyncio.create_task(gate.__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        await task
        assert gate.in_flight == 0 and not gate._waiters
        return gate.refused

    assert asyncio.run(scenario()) == 1


def test_concurrency_gate_serves_waiters_first_come_first_served():
    """A freed slot goes to the request that waited longest, never to one arriving just then; a
    waiter cancelled after being handed a slot passes it on."""
    async def scenario():
        gate = ConcurrencyGate("pipe queries", limit=1, wait_seconds=5, setting="ENGAGE_MAX_CONCURRENT_QUERIES")
        order: list[str] = []
        release = asyncio.Event()

        async def request(name: str, hold: asyncio.Event | None = None):
            async with gate:
                order.append(name)
                if hold:
                    await hold.wait()

        first = asyncio.create_task(request("first", release))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(request(f"waiter{i}")) for i in range(3)]
        await asyncio.sleep(0.01)  # all three in line
        release.set()
        await asyncio.sleep(0)
        newcomer = asyncio.create_task(request("newcomer"))  # arrives as the slot frees
        await asyncio.gather(first, *waiters, newcomer)
        assert order == ["first", "waiter0", "waiter1", "waiter2", "newcomer"]
        assert gate.in_flight == 0 and not gate._waiters
        # handed a slot, then cancelled before running: the slot goes to the next in line
        await gate.__aenter__()
        gone, next_one = asyncio.create_task(gate.__aenter__()), asyncio.create_task(request("next"))
        await asyncio.sleep(0.01)
        await gate.__aexit__()  # hands the slot to `gone`, cancelled before it resumes
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await asyncio.wait_for(next_one, 1)
        assert order[-1] == "next" and gate.in_flight == 0 and not gate._waiters

    asyncio.run(scenario())


class LiveServer:
    """The app under a real uvicorn server on 127.0.0.1, in a thread of this process."""

    def __init__(self, settings: Settings):
        self.port = _free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def burst(n_clients: int, n_each: int, send) -> list:
    """``n_clients`` threads released at once, each calling ``send(client, i)`` ``n_each`` times;
    the responses, or the exceptions (timeouts...) raised."""
    results, lock = [], threading.Lock()
    barrier = threading.Barrier(n_clients)

    def worker(k: int) -> None:
        mine = []
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            for i in range(n_each):
                try:
                    mine.append(send(client, k * n_each + i))
                except Exception as exc:  # noqa: BLE001 - a timeout or reset is a finding, kept
                    mine.append(exc)
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def pipe_request(server: LiveServer):
    names = list(PIPES)

    def send(client: httpx.Client, i: int) -> httpx.Response:
        return client.get(f"{server.url}/v0/pipes/{names[i % len(names)]}.json", params=WINDOW,
                          headers={"Authorization": f"Bearer {ADMIN}", "Cache-Control": "no-cache"})

    return send


def test_a_burst_over_the_query_cap_becomes_quick_429s(make_settings):
    with LiveServer(make_settings(max_concurrent_queries=1, concurrency_wait_ms=0)) as server:
        results = burst(24, 5, pipe_request(server))
        with httpx.Client() as client:  # afterwards the server answers as usual
            assert pipe_request(server)(client, 0).status_code == 200
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    for r in results:
        if r.status_code == 429:
            assert_error(r, 429, "1 pipe queries at once", "ENGAGE_MAX_CONCURRENT_QUERIES")
            assert r.headers["retry-after"] == "1"
            assert r.elapsed.total_seconds() < 5  # answered at once, not queued


def test_a_burst_within_the_wait_is_queued_not_refused(make_settings):
    with LiveServer(make_settings(max_concurrent_queries=1, concurrency_wait_ms=20_000)) as server:
        results = burst(8, 2, pipe_request(server))
    assert [getattr(r, "status_code", r) for r in results] == [200] * 16


def test_sixteen_benchmark_clients_see_no_429_at_the_defaults(make_settings):
    with LiveServer(make_settings()) as server:
        results = burst(16, 10, pipe_request(server))
    assert [getattr(r, "status_code", r) for r in results] == [200] * 160


def test_a_burst_over_the_events_cap_becomes_429s_that_accept_nothing(fresh_settings):
    def body(k: int) -> bytes:  # distinct bodies: a batch identical to a loaded one would load nothing
        return b"".join(json.dumps({"timestamp": "2025-03-01 12:00:00", "user_id": f"u{k}-{i}", "event_type": "click",
                                     "session_id": "s", "duration": i}).encode() + b"\n" for i in range(20_000))

    bodies = [body(k) for k in range(16)]
    settings = fresh_settings.model_copy(update={"max_concurrent_event_requests": 1, "concurrency_wait_ms": 0})
    with LiveServer(settings) as server:
        def send(client: httpx.Client, i: int) -> httpx.Response:
            return client.post(f"{server.url}/v0/events?name=user_events", content=bodies[i],
                               headers={"Authorization": f"Bearer {TOKENS['tracker'][0]}"})

        results = burst(8, 2, send)
    assert not [r for r in results if isinstance(r, Exception)]
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {202, 429} and statuses.count(202) >= 1 and statuses.count(429) >= 1, statuses
    for r in results:
        if r.status_code == 429:
            assert_error(r, 429, "event requests", "ENGAGE_MAX_CONCURRENT_EVENT_REQUESTS")
    accepted = sum(r.json()["successful_rows"] for r in results if r.status_code == 202)
    load_pending(settings)
    con = connect_warehouse(settings)
    try:
        assert con.execute("SELECT count(*) FROM raw.user_events").fetchone()[0] == accepted == 20_000 * statuses.count(202)
    finally:
        con.close()


# ----------------------------------------------------------------------------- CORS


def test_cors_is_off_by_default(make_settings):
    with TestClient(create_app(make_settings())) as c:
        r = get(c, headers={"Origin": "https://dash.example"})
        assert r.status_code == 200
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
        pre = c.options(PIPE, headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "GET",
                                       "Access-Control-Request-Headers": "authorization"})
        assert_error(pre, 405)
        assert not [h for h in pre.headers if h.lower().startswith("access-control-")]


def test_cors_when_configured(make_settings):
    settings = make_settings(cors_origins="https://dash.example, https://other.example")
    with TestClient(create_app(settings)) as c:
        r = get(c, headers={"Origin": "https://dash.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://dash.example"
        exposed = r.headers["access-control-expose-headers"]
        for h in ("X-Request-ID", "X-Engage-Snapshot", "X-RateLimit-Remaining", "Retry-After"):
            assert h in exposed
        assert "access-control-allow-credentials" not in r.headers
        pre = c.options(PIPE, headers={"Origin": "https://other.example", "Access-Control-Request-Method": "GET",
                                       "Access-Control-Request-Headers": "authorization, x-request-id"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://other.example"
        assert set(pre.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        assert pre.headers["x-content-type-options"] == "nosniff" and pre.headers["x-request-id"]
        post = c.options("/v0/events", headers={"Origin": "https://dash.example",
                                                "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "authorization,content-encoding"})
        assert post.status_code == 200
        # An origin not listed: no CORS headers on the answer, and a refused preflight is a JSON error.
        r = get(c, headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        for headers in ({"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
                        {"Origin": "https://dash.example", "Access-Control-Request-Method": "DELETE"},
                        {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET",
                         "Access-Control-Request-Headers": "x-evil"}):
            assert_error(c.options(PIPE, headers=headers), 400, "CORS", "ENGAGE_CORS_ORIGINS")
    with TestClient(create_app(make_settings(cors_origins="*"))) as c:
        r = get(c, headers={"Origin": "https://anywhere.example"})
        assert r.headers["access-control-allow-origin"] == "*"


# ----------------------------------------------------------------------------- security headers


def assert_security_headers(r, csp: str | None = API_CSP) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    for name in ("x-content-type-options", "x-frame-options", "cache-control", "content-security-policy"):
        assert len(r.headers.get_list(name)) == 1, name
    if csp is not None:
        assert r.headers["content-security-policy"] == csp


def test_security_headers_on_every_response(make_settings, fresh_settings):
    with TestClient(create_app(make_settings(rate_limit_anonymous_per_second=1, rate_limit_anonymous_burst=1)),
                    raise_server_exceptions=False) as c:
        responses = [get(c), get(c, "/v0/pipes/session_metrics.csv"), get(c, "/v0/pipes/session_metrics.parquet"),
                     get(c, params={"start_date": "bad"}), get(c, token=None), get(c, token="x"),
                     get(c, "/v0/pipes/nope.json"), c.post(PIPE), c.get("/health"), c.get("/ready"),
                     c.get("/v0/pipes/openapi.json"), c.get("/openapi.json")]
        statuses = [r.status_code for r in responses]
        assert statuses == [200, 200, 200, 400, 403, 429, 404, 405, 200, 200, 200, 200]
        for r in responses:
            assert_security_headers(r)
    with TestClient(create_app(fresh_settings)) as c:
        r = c.post("/v0/events?name=user_events", content=b'{"bad": 1}\n',
                   headers={"Authorization": f"Bearer {TOKENS['tracker'][0]}"})
        assert r.status_code == 202
        assert_security_headers(r)
        assert_error(get(c), 503)
        assert_security_headers(get(c))


def test_an_unexpected_500_carries_the_security_headers_too(make_settings):
    app = create_app(make_settings())

    @app.get("/boom")
    def boom():
        raise RuntimeError("internal")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
        assert_error(r, 500)
        assert_security_headers(r)


def test_the_docs_pages_get_a_csp_that_allows_what_they_load(make_settings):
    with TestClient(create_app(make_settings())) as c:
        for path in ("/docs", "/redoc"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert_security_headers(r, csp=None)
            policy = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
            assert policy["frame-ancestors"] == "'none'" and "'self'" in policy["connect-src"]
            for src in re.findall(r'<script src="([^"]+)"', r.text):
                assert src.startswith("/") or src.rsplit("/npm/", 1)[0] in policy["script-src"], src
            assert "'unsafe-inline'" in policy["script-src"]  # the page's bootstrap script is inline
            for href in re.findall(r'<link[^>]+href="(https://[^"]+)"', r.text):
                host = "/".join(href.split("/")[:3])
                assert any(host in policy[d] for d in ("style-src", "img-src")), href


# ----------------------------------------------------------------------------- tokens: never logged, never echoed


def test_tokens_are_never_echoed_in_errors(make_settings, fresh_settings):
    cases = [  # (path, extra params, token, expected status)
        (PIPE, {}, "tok-guess-" + "g" * 24, 403),
        ("/v0/pipes/active_users.json", {}, TOKENS["sessions"][0], 403),
        (PIPE, {"start_date": "bad"}, TOKENS["sessions"][0], 400),
        (PIPE, {"time_bucket": "year"}, ADMIN, 400),
        ("/v0/pipes/nope.json", {}, ADMIN, 404),
        ("/v0/pipes/session_metrics.xml", {}, ADMIN, 404),
        (PIPE, {}, TOKENS["slow"][0], 200),
        (PIPE, {}, TOKENS["slow"][0], 429),
    ]
    with TestClient(create_app(make_settings())) as c:
        for how in ("header", "query"):
            c.app.state.limits.limiter = type(c.app.state.limits.limiter)()  # fresh buckets for each round
            for path, params, token, status in cases:
                r = get(c, path, token=token, how=how, params=params)
                assert r.status_code == status, (path, how, r.text)
                assert token not in r.text and not any(token in v for v in r.headers.values()), (path, how)
    with TestClient(create_app(fresh_settings)) as c:
        for token, params, status in ((TOKENS["reader"][0], "name=user_events", 403),
                                      (TOKENS["tracker"][0], "name=nope", 404),
                                      (TOKENS["tracker"][0], "name=user_events&wait=maybe", 400)):
            for r in (c.post(f"/v0/events?{params}", content=b"{}", headers={"Authorization": f"Bearer {token}"}),
                      c.post(f"/v0/events?{params}&token={token}", content=b"{}")):
                assert r.status_code == status and token not in r.text


def test_tokens_are_never_logged_by_the_server(tmp_path, tokens_file):
    """`engage serve` (uvicorn, access log on) answering 200/400/403/404/405/429 and the Events API,
    tokens in the header and the query string: none of them is in its output."""
    port = _free_port()
    env = {**os.environ, "ENGAGE_HOME": str(tmp_path / "home"), "ENGAGE_ADMIN_TOKEN": ADMIN,
           "ENGAGE_TOKENS_FILE": str(tokens_file), "ENGAGE_RATE_LIMIT_ANONYMOUS_PER_SECOND": "1",
           "ENGAGE_RATE_LIMIT_ANONYMOUS_BURST": "2"}
    code = f"from serving.server import serve; serve(port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    statuses = []
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as c:
            for token in SECRETS + ["tok-guess-" + "g" * 24]:
                for path in (PIPE, "/v0/pipes/active_users.json?start_date=bad", "/v0/pipes/nope.json"):
                    statuses.append(c.get(path, params={"token": token}).status_code)
                    statuses.append(c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code)
                statuses.append(c.post(f"/v0/pipes/session_metrics.json?token={token}").status_code)
                statuses.append(c.post(f"/v0/events?name=user_events&token={token}", content=b"{}\n").status_code)
            for _ in range(2):  # the `slow` token's limit: one request per second
                statuses.append(c.get(PIPE, params={"token": TOKENS["slow"][0]}).status_code)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert {400, 403, 404, 405, 429, 202, 503} <= set(statuses), statuses  # (no data in this home: 503)
    assert "GET /v0/pipes/session_metrics.json?token=[REDACTED]" in out  # the access log is on
    assert "event=rate_limited" in out and "name=slow" in out  # the 429s are logged, by token name
    for secret in SECRETS + ["tok-guess-" + "g" * 24]:
        assert secret not in out


def test_our_loggers_never_see_a_token(make_settings):
    handler = _ListHandler()
    logger = logging.getLogger("engage")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with TestClient(create_app(make_settings(rate_limit_anonymous_per_second=1, rate_limit_anonymous_burst=1))) as c:
            for token in SECRETS:
                get(c, token=token, how="query")
                get(c, token=token + "x")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    logged = "\n".join(handler.lines)
    assert "event=rate_limited" in logged  # something was logged ...
    for secret in SECRETS:
        assert secret not in logged  # ... and no token


# ----------------------------------------------------------------------------- the admin token file


def test_generated_admin_token_file_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        s = Settings(home=tmp_path / "h", admin_token=None)
        create_app(s)
    finally:
        os.umask(old)
    assert stat.S_IMODE(s.admin_token_path.stat().st_mode) == 0o600


def test_a_readable_admin_token_file_is_made_owner_only(tmp_path, caplog):
    s = Settings(home=tmp_path / "h", admin_token=None)
    s.home_dir.mkdir(parents=True)
    s.admin_token_path.write_text("p.existing-admin-token\n")
    os.chmod(s.admin_token_path, 0o644)
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    os.chmod(tokens, 0o644)
    with caplog.at_level(logging.WARNING, logger="engage.serving.auth"):
        create_app(s.model_copy(update={"tokens_file": tokens}))
    assert stat.S_IMODE(s.admin_token_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o644  # the operator's file: told, not changed
    text = caplog.text
    assert "made owner-only" in text and "chmod 600" in text and "existing-admin-token" not in text


# ----------------------------------------------------------------------------- the scoped-token matrix

WHO = {  # who: the token sent (None = none)
    "admin": ADMIN,
    "PIPES:READ": TOKENS["reader"][0],
    "PIPES:READ:session_metrics": TOKENS["sessions"][0],
    "PIPES:READ:event_metrics (another pipe)": TOKENS["events_only"][0],
    "DATASOURCES:APPEND:user_events": TOKENS["tracker"][0],
    "invalid token": "limits-invalid-token-0123456789",
    "no token": None,
}
OPEN = {"/health", "/ready", "/v0/pipes/openapi.json"}  # no token needed


def expected(who: str, endpoint: str) -> int:
    if endpoint in OPEN:
        return 200
    if endpoint == "POST /v0/events":
        return 202 if who in ("admin", "DATASOURCES:APPEND:user_events") else 403
    pipe = endpoint.split("/")[-1].split(".")[0]
    allowed = {"admin": set(PIPES), "PIPES:READ": set(PIPES), "PIPES:READ:session_metrics": {"session_metrics"},
               "PIPES:READ:event_metrics (another pipe)": {"event_metrics"}}.get(who, set())
    return 200 if pipe in allowed else 403


@pytest.mark.parametrize("how", ["header", "query"])
def test_scoped_token_matrix_over_every_endpoint(make_settings, fresh_settings, how):
    endpoints = [f"/v0/pipes/{p}.json" for p in PIPES] + sorted(OPEN) + ["POST /v0/events"]
    got = {}
    with TestClient(create_app(make_settings())) as pipes, TestClient(create_app(fresh_settings)) as events:
        for who, token in WHO.items():
            for endpoint in endpoints:
                if endpoint == "POST /v0/events":
                    params = "name=user_events" + (f"&token={token}" if token and how == "query" else "")
                    headers = {"Authorization": f"Bearer {token}"} if token and how == "header" else {}
                    r = events.post(f"/v0/events?{params}", headers=headers, content=b'{"user_id": "x"}\n')
                else:
                    r = get(pipes, endpoint, token=token, how=how)
                got[who, endpoint] = r.status_code
                if r.status_code == 403:
                    assert_error(r, 403, "scope" if who not in ("invalid token", "no token") else "token")
                if token:
                    assert token not in r.text
    want = {(who, e): expected(who, e) for who in WHO for e in endpoints}
    assert got == want
