"""The pipes over a real published snapshot (``published_home``: edge-case events loaded by the real
Dagster job, dbt marts, publish), checked against the contract's reference SQL (tests/reference.py)
over the same events: values, order, gap filling, limits, every format, headers, snapshot switching."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import random
import re
import shutil
import threading
import urllib.parse
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from engage.snapshots import current_snapshot
from serving.app import create_app
from serving.pipes import PIPES

try:
    from tests.reference import PipeQuery, reference_answer, reference_rows_before_limit
except ImportError:  # pragma: no cover - tests/ not a package
    from reference import PipeQuery, reference_answer, reference_rows_before_limit

ADMIN = "data-test-admin-token"
D = dt.datetime
SEED_DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"


@pytest.fixture(scope="module")
def published(request):
    try:
        return request.getfixturevalue("published_home")
    except pytest.FixtureLookupError:  # pragma: no cover
        pytest.skip("needs the published_home fixture (tests/conftest.py)")


@pytest.fixture(scope="module")
def client(published):
    settings = published.settings.model_copy(update={"admin_token": ADMIN, "tokens_file": None})
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def full_range(published):
    """First and last event (the edge data has outliers decades apart)."""
    return published.oracle.execute("SELECT min(timestamp), max(timestamp) FROM user_events").fetchone()


@pytest.fixture(scope="module")
def data_range(published):
    """Where the bulk of the events is (2nd..98th percentile), narrow enough for hourly buckets."""
    lo, hi = published.oracle.execute(
        "SELECT quantile_disc(timestamp, 0.02), quantile_disc(timestamp, 0.98) FROM user_events").fetchone()
    assert (hi - lo).days < 300
    return lo, hi


@pytest.fixture(scope="module")
def values(published):
    """Values present in the data for each filter (plus one absent value)."""
    out = {}
    for col in ("platform", "device", "country", "event_type"):
        out[col] = [r[0] for r in published.oracle.execute(
            f"SELECT DISTINCT {col} FROM user_events ORDER BY 1").fetchall()] + ["absent-value"]
    return out


def fmt(t: D) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def api_rows(body: dict) -> list[dict]:
    return body["data"]


def expected_rows(rows: list[dict]) -> list[dict]:
    return [{k: fmt(v) if isinstance(v, D) else v for k, v in r.items()} for r in rows]


def assert_rows_equal(got: list[dict], want: list[dict], context) -> None:
    assert len(got) == len(want), (context, len(got), len(want), got[:3], want[:3])
    for i, (g, w) in enumerate(zip(got, want)):
        assert list(g) == list(w), (context, i, g, w)
        for k in w:
            if isinstance(w[k], float) or isinstance(g[k], float):
                assert g[k] is not None and w[k] is not None and math.isclose(g[k], w[k], rel_tol=1e-9), \
                    (context, i, k, g, w)
            else:
                assert g[k] == w[k], (context, i, k, g, w)


def query_string(q: PipeQuery, extra: dict | None = None) -> str:
    params = {"start_date": fmt(q.start), "end_date": fmt(q.end), "time_bucket": q.time_bucket,
              "limit": str(q.limit), "group_by": q.group_by,
              "segment_by_platform": "true" if q.segment_by_platform else "false", "token": ADMIN}
    for k, v in q.filters.items():
        params[k] = ",".join(v) if v != [""] else ","  # only the empty value: "," (a lone "" is no filter)
    params.update(extra or {})
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def check(client, published, q: PipeQuery, context=None) -> dict:
    r = client.get(f"/v0/pipes/{q.pipe}.json?{query_string(q)}")
    assert r.status_code == 200, (context, r.text)
    body = r.json()
    want = reference_answer(published.oracle, q)
    assert_rows_equal(api_rows(body), expected_rows(want), context or q)
    assert body["rows"] == len(want)
    assert body["rows_before_limit_at_least"] == reference_rows_before_limit(published.oracle, q)
    return body


def random_query(rng: random.Random, data_range, values) -> PipeQuery:
    lo, hi = data_range
    pipe = rng.choice(list(PIPES))
    span = (hi - lo).total_seconds()
    a = lo + dt.timedelta(seconds=rng.uniform(-0.1, 1.0) * span)
    kind = rng.random()
    if kind < 0.3:
        b = a + dt.timedelta(seconds=rng.randint(0, 3 * 86400))
    elif kind < 0.5:  # whole days
        a = a.replace(hour=0, minute=0, second=0)
        b = a + dt.timedelta(days=rng.randint(0, 20)) - dt.timedelta(seconds=1) + dt.timedelta(days=1)
    else:
        b = a + dt.timedelta(seconds=rng.uniform(0, 1.1) * span)
    a, b = a.replace(microsecond=0), b.replace(microsecond=0)
    tb = rng.choice(["hour", "day", "week", "month"])
    filters = {}
    for f in PIPES[pipe].filters:
        if rng.random() < 0.25:
            filters[f] = rng.sample(values[f], min(len(values[f]), rng.randint(1, 3)))
    return PipeQuery(pipe=pipe, start=a, end=b, time_bucket=tb, filters=filters, limit=rng.choice([1, 2, 5, 100]),
                     group_by=rng.choice(["country", "region", "city"]),
                     segment_by_platform=rng.random() < 0.6)


# ----------------------------------------------------------------------------- values


def test_whole_data_every_pipe_every_option(client, published, data_range, full_range):
    for tb in ("hour", "day", "week", "month"):
        lo, hi = data_range if tb in ("hour", "day") else full_range  # at most 10,000 buckets
        start, end = lo.replace(hour=0, minute=0, second=0), hi.replace(hour=23, minute=59, second=59)
        for pipe in ("session_metrics", "user_engagement_time_series"):
            check(client, published, PipeQuery(pipe, start, end, time_bucket=tb))
        for seg in (True, False):
            check(client, published, PipeQuery("active_users", start, end, time_bucket=tb, segment_by_platform=seg))
    start, end = full_range
    for g in ("country", "region", "city"):
        for limit in (1, 3, 100, 10000):
            check(client, published, PipeQuery("geographic_distribution", start, end, group_by=g, limit=limit))
    for limit in (1, 2, 10000):
        check(client, published, PipeQuery("event_metrics", start, end, limit=limit))


def test_matches_reference_on_random_queries(client, published, data_range, values):
    rng = random.Random(20250127)
    for i in range(200):
        q = random_query(rng, data_range, values)
        check(client, published, q, context=(i, q))


def test_partial_edge_hours_and_days(client, published, data_range):
    """Windows cut inside hours and days: hourly edges + daily middle give exact distinct counts."""
    lo, _ = data_range
    base = lo.replace(hour=0, minute=0, second=0) + dt.timedelta(days=2)
    windows = [
        (base + dt.timedelta(hours=5, minutes=30), base + dt.timedelta(days=3, hours=4, minutes=10)),
        (base + dt.timedelta(hours=23, minutes=59), base + dt.timedelta(days=1, seconds=1)),
        (base, base + dt.timedelta(days=1) - dt.timedelta(seconds=1)),
        (base + dt.timedelta(hours=1), base + dt.timedelta(days=6, hours=23)),
        (base + dt.timedelta(minutes=1), base + dt.timedelta(minutes=59)),  # one hour
    ]
    for a, b in windows:
        for pipe in PIPES:
            for tb in ("hour", "day", "week", "month"):
                check(client, published, PipeQuery(pipe, a, b, time_bucket=tb))


def test_filters_are_exact_and_case_sensitive(client, published, data_range, values):
    lo, hi = data_range
    for f in ("platform", "device", "country", "event_type"):
        for v in values[f]:
            for pipe in PIPES:
                if f in PIPES[pipe].filters:
                    check(client, published, PipeQuery(pipe, lo, hi, time_bucket="week", filters={f: [v]}))
    if "" in values["platform"]:
        # the empty platform is a platform like any other: `platform=,web` selects '' and 'web'
        check(client, published, PipeQuery("event_metrics", lo, hi, filters={"platform": ["", "web"]}))


def test_window_without_data_is_gap_filled(client, published):
    a, b = D(2001, 1, 1), D(2001, 1, 3, 23, 59, 59)
    for pipe in PIPES:
        body = check(client, published, PipeQuery(pipe, a, b))
        if PIPES[pipe].time_series:
            if pipe == "active_users":  # no platform has an event in the window: no rows
                assert body["data"] == []
            else:
                assert [r["time_bucket"] for r in body["data"]] == ["2001-01-01 00:00:00", "2001-01-02 00:00:00",
                                                                   "2001-01-03 00:00:00"]
                assert all(v in (0, None) for r in body["data"] for k, v in r.items() if k != "time_bucket")
        else:
            assert body["data"] == [] and body["rows"] == 0 and body["rows_before_limit_at_least"] == 0
    body = check(client, published, PipeQuery("active_users", a, b, segment_by_platform=False))
    assert [r["active_users"] for r in body["data"]] == [0, 0, 0]


# ----------------------------------------------------------------------------- shape and formats


def test_json_shape_and_types(client, data_range):
    lo, hi = data_range
    for pipe in PIPES:
        r = client.get(f"/v0/pipes/{pipe}.json?token={ADMIN}&start_date={fmt(lo)}&end_date={fmt(hi)}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert list(body) == ["meta", "data", "rows", "rows_before_limit_at_least", "statistics"]
        assert body["meta"] == [{"name": c.name, "type": c.type} for c in PIPES[pipe].columns_for(
            PIPES[pipe].parse({}))]
        assert isinstance(body["statistics"]["elapsed"], float)
        assert isinstance(body["statistics"]["rows_read"], int) and body["statistics"]["rows_read"] > 0
        assert isinstance(body["statistics"]["bytes_read"], int) and body["statistics"]["bytes_read"] > 0
        assert body["rows"] == len(body["data"]) > 0
        for row in body["data"]:
            assert list(row) == [m["name"] for m in body["meta"]]
            for m in body["meta"]:
                v = row[m["name"]]
                if m["type"] == "DateTime":
                    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", v)
                elif m["type"] == "UInt64":
                    assert isinstance(v, int) and not isinstance(v, bool) and v >= 0
                elif m["type"] == "Float64":
                    assert isinstance(v, float)
                elif m["type"] == "Nullable(Float64)":
                    assert v is None or isinstance(v, float)
                else:
                    assert isinstance(v, str)


def test_cached_answers_are_rendered_once_with_their_own_statistics(client, data_range):
    """A cached answer's body is rendered once (serving/formats.py, Result.rendered) and reused: the
    same bytes but for this request's statistics, and those bytes are what rendering it anew gives."""
    from serving.formats import Column, Result, render_json

    lo, hi = data_range
    path = f"/v0/pipes/active_users.json?token={ADMIN}&start_date={fmt(lo)}&end_date={fmt(hi)}"
    first, second = client.get(path).json(), client.get(path).json()
    assert {k: v for k, v in first.items() if k != "statistics"} == {k: v for k, v in second.items() if k != "statistics"}
    assert first["statistics"]["rows_read"] == second["statistics"]["rows_read"] > 0

    result = Result((Column("time_bucket", "DateTime"), Column("n", "UInt64")), [(D(2024, 1, 1), 3)], 1)
    for stats in ({"elapsed": 0.5}, {"elapsed": 0.25, "rows_read": 7}):
        result.statistics = stats
        assert render_json(result) == orjson.dumps({
            "meta": [{"name": "time_bucket", "type": "DateTime"}, {"name": "n", "type": "UInt64"}],
            "data": [{"time_bucket": "2024-01-01 00:00:00", "n": 3}], "rows": 1, "rows_before_limit_at_least": 1,
            "statistics": stats})
    assert list(result.rendered) == ["json"]


def _json_body(client, path):
    r = client.get(path.replace(".FMT", ".json"))
    assert r.status_code == 200
    return r.json()


@pytest.mark.parametrize("pipe, extra", [
    ("session_metrics", "time_bucket=hour"),  # nulls in hours without sessions
    ("user_engagement_time_series", "time_bucket=day"),
    ("active_users", "time_bucket=week"),
    ("active_users", "segment_by_platform=false"),
    ("geographic_distribution", "group_by=city&limit=7"),
    ("event_metrics", ""),
])
def test_formats_agree(client, data_range, pipe, extra):
    lo, _ = data_range
    path = (f"/v0/pipes/{pipe}.FMT?token={ADMIN}&start_date={fmt(lo)}"
            f"&end_date={fmt(lo + dt.timedelta(days=3))}&{extra}")
    body = _json_body(client, path)
    names = [m["name"] for m in body["meta"]]
    data = body["data"]

    r = client.get(path.replace(".FMT", ".ndjson"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(line) for line in r.content.splitlines()] == data
    assert r.content.endswith(b"\n") or not data

    r = client.get(path.replace(".FMT", ".csv"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    import csv

    rows = list(csv.reader(io.StringIO(r.content.decode())))
    assert rows[0] == names
    assert len(rows) == len(data) + 1
    for line, want in zip(rows[1:], data):
        for cell, name in zip(line, names):
            v = want[name]
            if v is None:
                assert cell == ""
            elif isinstance(v, float):
                assert math.isclose(float(cell), v, rel_tol=1e-12)
            else:
                assert cell == str(v)

    r = client.get(path.replace(".FMT", ".parquet"))
    assert r.status_code == 200
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == names
    types = {m["name"]: m["type"] for m in body["meta"]}
    for field in table.schema:
        t = types[field.name]
        assert str(field.type) == {"DateTime": "timestamp[ms]", "UInt64": "uint64", "String": "string",
                                   "Float64": "double", "Nullable(Float64)": "double"}[t]
    got = table.to_pylist()
    for g, w in zip(got, data):
        for k, v in w.items():
            gv = g[k]
            if isinstance(gv, D):
                gv = fmt(gv)
            assert gv == v or (isinstance(v, float) and math.isclose(gv, v, rel_tol=1e-12))
    assert len(got) == len(data)


def test_csv_null_is_empty_field(client, published, data_range):
    r = client.get(f"/v0/pipes/session_metrics.csv?token={ADMIN}&start_date=2001-01-01&end_date=2001-01-01%2001:00:00"
                   "&time_bucket=hour")
    assert r.content.decode() == ("time_bucket,session_count,avg_session_duration,bounce_rate\n"
                                  "2001-01-01 00:00:00,0,,\n2001-01-01 01:00:00,0,,\n")


# ----------------------------------------------------------------------------- headers, readiness


def test_snapshot_headers_and_ready(client, published):
    snap = current_snapshot(published.settings)
    watermark = published.oracle.execute("SELECT max(timestamp) FROM user_events").fetchone()[0]
    for path in (f"/v0/pipes/event_metrics.json?token={ADMIN}", f"/v0/pipes/event_metrics.csv?token={ADMIN}",
                 "/v0/pipes/event_metrics.json?token=wrong", "/health", "/ready",
                 f"/v0/pipes/event_metrics.json?token={ADMIN}&limit=0"):
        r = client.get(path)
        assert r.headers["x-engage-snapshot"] == snap.snapshot_id, path
        assert r.headers["x-engage-watermark"] == fmt(watermark), path
        assert r.headers["x-request-id"]
    body = client.get("/ready").json()
    assert body["status"] == "ready" and body["snapshot_id"] == snap.snapshot_id
    assert body["watermark"] == fmt(watermark)


def test_seed_examples_from_the_docs_work(client):
    """Every curl example of docs/API.md answers 200 (host and admin token substituted)."""
    urls = re.findall(r'curl[^\n]*?"http://127\.0\.0\.1:8000(/v0/pipes/[^"]+)"', SEED_DOC.read_text())
    assert len(urls) >= 5
    for url in urls:
        r = client.get(url.replace("$TB_ADMIN_TOKEN", ADMIN))
        assert r.status_code == 200, (url, r.text)
        assert r.json()["rows"] >= 0


# ----------------------------------------------------------------------------- snapshot switching


def test_switching_snapshots_under_load_never_fails(tmp_path, published, data_range):
    """CURRENT flips between two snapshots while requests run: every request succeeds, each answer
    comes from one snapshot (named by its header), and it is the right answer."""
    src = current_snapshot(published.settings)
    settings = published.settings.model_copy(update={"home": tmp_path / "home", "admin_token": ADMIN,
                                                     "tokens_file": None})
    settings.snapshots_dir.mkdir(parents=True)
    ids = ["snap-one", "snap-two"]
    for sid in ids:
        copy = settings.snapshots_dir / f"{sid}.duckdb"
        shutil.copyfile(src.path, copy)
        with duckdb.connect(str(copy)) as con:  # a snapshot file must hold the id that names it
            con.execute("UPDATE snapshot_info SET snapshot_id = ?", [sid])

    def point(sid: str) -> None:
        tmp = settings.snapshots_dir / ".CURRENT.tmp"
        tmp.write_text(json.dumps({"snapshot_id": sid, "file": f"{sid}.duckdb"}))
        os.replace(tmp, settings.snapshots_dir / "CURRENT")

    point(ids[0])
    lo, hi = data_range
    path = f"/v0/pipes/user_engagement_time_series.json?token={ADMIN}&start_date={fmt(lo)}&end_date={fmt(hi)}"
    seen: Counter = Counter()
    errors: list = []
    with TestClient(create_app(settings)) as c:
        c.app.state.snapshots.check_interval = 0
        expected = c.get(path).json()["data"]
        stop = threading.Event()

        def worker():
            while not stop.is_set():
                try:
                    r = c.get(path)
                    if r.status_code != 200 or r.json()["data"] != expected:
                        errors.append((r.status_code, r.text[:200]))
                    seen[r.headers["x-engage-snapshot"]] += 1
                except Exception as exc:  # pragma: no cover
                    errors.append(repr(exc))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(40):
            point(ids[i % 2])
            stop.wait(0.02)
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert set(seen) == set(ids)
