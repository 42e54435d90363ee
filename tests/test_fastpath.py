"""The fast paths (bucket cubes, serving/fastpath.py; result cache, serving/cache.py) give exactly
the contract's reference answers, on realistic data with thousands of users (engage.generate)."""

from __future__ import annotations

import datetime as dt
import random
import shutil

import duckdb
import pytest
from fastapi.testclient import TestClient

from engage.generate import generate
from engage.snapshots import current_snapshot
from serving.app import create_app
from serving.fastpath import split_window
from serving.params import buckets

from reference import PipeQuery, reference_answer, reference_rows_before_limit
from edge_data import write_ndjson
from test_serving_data import assert_rows_equal, expected_rows, query_string

ADMIN = "data-test-admin-token"  # the token test_serving_data.query_string sends
END = dt.datetime(2025, 3, 1)
D = dt.datetime


@pytest.fixture(scope="module")
def many_users(tmp_path_factory):
    import os

    from conftest import use_home
    from engage.cli import run_refresh

    previous = os.environ.get("ENGAGE_HOME")
    settings = use_home(tmp_path_factory.mktemp("fastpath") / "home")
    summary = generate(events=80_000, days=120, seed=11, out=settings.landing, end=END)
    assert summary["users"] > 2000
    assert run_refresh(settings).success
    with duckdb.connect(str(current_snapshot(settings).path), read_only=True) as con:
        FIRST_RUN["type_bits"] = dict(con.execute("SELECT event_type, bit FROM event_type_bits").fetchall())
        con.execute(f"ATTACH '{settings.warehouse_path}' AS wh (READ_ONLY)")
        FIRST_RUN["active_user"] = con.execute(  # (user, day, platform) with several event types
            "SELECT u.user_id, d.period_start, d.platform FROM user_engagement_daily AS d "
            "JOIN wh.intermediate.int_user_keys AS u USING (user_key) GROUP BY ALL "
            "HAVING count(DISTINCT event_type) > 1 ORDER BY ALL LIMIT 1").fetchone()
    # a second run with a day of new events and late ones: the cubes are maintained incrementally;
    # and two event types never seen before, one late, sent by a user with other types that day
    generate(events=3_000, days=40, seed=12, out=settings.landing / "more", end=END + dt.timedelta(days=1))
    user, day, platform = FIRST_RUN["active_user"]
    write_ndjson(settings.landing / "more" / "new-types.ndjson", [
        dict(timestamp=str(day + dt.timedelta(hours=h)), user_id=user, event_type=t, session_id=f"s_new_{h}",
             duration=5, device="desktop", platform=platform, page="/", country="US", region="Texas", city="Austin")
        for h, t in ((3, "zz_new_type"), (4, "aa_late_type"), (5, "zz_new_type"))])
    assert run_refresh(settings).success
    oracle = duckdb.connect()
    oracle.execute(f"ATTACH '{settings.warehouse_path}' AS wh (READ_ONLY)")
    oracle.execute("CREATE TABLE user_events AS SELECT * EXCLUDE (_batch_id) FROM wh.raw.user_events")
    oracle.execute("DETACH wh")
    app_settings = settings.model_copy(update={"admin_token": ADMIN, "tokens_file": None})
    with TestClient(create_app(app_settings)) as client:
        yield client, oracle, settings
    oracle.close()
    if previous is None:
        os.environ.pop("ENGAGE_HOME", None)
    else:
        os.environ["ENGAGE_HOME"] = previous


FIRST_RUN: dict = {}  # facts of the fixture's first refresh


def check(client, oracle, q: PipeQuery, cached: bool) -> None:
    headers = {} if cached else {"Cache-Control": "no-cache"}
    r = client.get(f"/v0/pipes/{q.pipe}.json?{query_string(q)}", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_rows_equal(body["data"], expected_rows(reference_answer(oracle, q)), q)
    assert body["rows_before_limit_at_least"] == reference_rows_before_limit(oracle, q), q


def _hours_covered(tb: str, whole: list, parts: list) -> list:
    """Every hour of the parts and of the whole buckets, once per time it is covered."""
    hours = []
    for lo, hi in parts:
        hours += [lo + dt.timedelta(hours=i) for i in range(int((hi - lo).total_seconds() // 3600) + 1)]
    reach = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1), "week": dt.timedelta(days=7),
             "month": dt.timedelta(days=31)}[tb]  # to the next bucket's start (and no further)
    for w in whole:
        nxt = buckets(tb, w, w + reach)[1]
        hours += [w + dt.timedelta(hours=i) for i in range(int((nxt - w).total_seconds() // 3600))]
    return sorted(hours)


def test_split_window_covers_each_hour_once():
    rng = random.Random(3)
    for _ in range(300):
        a = D(2024, 1, 1) + dt.timedelta(hours=rng.randrange(24 * 400))
        b = a + dt.timedelta(hours=rng.randrange(24 * 100))
        want = [a + dt.timedelta(hours=i) for i in range(int((b - a).total_seconds() // 3600) + 1)]
        for tb in ("hour", "day", "week", "month"):
            assert _hours_covered(tb, *split_window(tb, a, b)) == want, (tb, a, b)
            # with the data's first and last hour known, a bucket whose hours outside the window hold
            # no data counts as whole: the hours with data are still covered exactly once
            first = a + dt.timedelta(hours=rng.randrange(-24 * 40, 24 * 40))
            last = first + dt.timedelta(hours=rng.randrange(24 * 100))
            covered = _hours_covered(tb, *split_window(tb, a, b, (first, last)))
            assert [h for h in covered if first <= h <= last] == [h for h in want if first <= h <= last], \
                (tb, a, b, first, last)


def test_span_counts_count_the_spans_meeting_a_window():
    """SpanCounts (spans counted by first and by last day per key) against counting the spans."""
    from serving.fastpath import _RANKING, SpanCounts

    rng = random.Random(4)
    spans = []
    for user in range(400):
        for key in rng.sample(["click", "view", "buy", ""], rng.randint(1, 3)):
            first = D(2024, 3, 1) + dt.timedelta(days=rng.randrange(90))
            spans.append(("", "", key, user, first, first + dt.timedelta(days=rng.choice([0, 0, 1, rng.randrange(60)]))))
    con = duckdb.connect()
    con.execute("CREATE TABLE event_user_spans (filter_dim VARCHAR, filter_value VARCHAR, event_type VARCHAR, "
                "user_key BIGINT, first_day TIMESTAMP, last_day TIMESTAMP)")
    con.executemany("INSERT INTO event_user_spans VALUES (?, ?, ?, ?, ?, ?)",
                    spans + [("platform", "web", "click", 1, D(2024, 1, 1), D(2024, 1, 1))])  # another filter's span
    counts = SpanCounts.load(con, _RANKING["event_metrics"], "filter_dim = ? AND filter_value = ?", ["", ""],
                             ("event_type",))
    for _ in range(300):
        a = D(2024, 2, 15) + dt.timedelta(days=rng.randrange(170))
        b = a + dt.timedelta(days=rng.randrange(100))
        want: dict = {}
        for _, _, key, _, first, last in spans:
            if first <= b and last >= a:
                want[(key,)] = want.get((key,), 0) + 1
        assert {k: n for k, n in counts.meeting(a, b).items() if n} == want, (a, b)


def test_fast_paths_equal_the_reference(many_users):
    client, oracle, _ = many_users
    lo, hi = END - dt.timedelta(days=120), END + dt.timedelta(days=1) - dt.timedelta(seconds=1)
    windows = [
        (lo, hi),  # everything, whole days
        (D(2025, 1, 6), D(2025, 1, 12, 23, 59, 59)),  # one ISO week
        (D(2024, 11, 3, 5, 30), D(2025, 2, 10, 17, 5)),  # partial edges
        (D(2024, 12, 1), D(2024, 12, 31, 23)),  # a month but its last hour
        (D(2025, 2, 3, 7), D(2025, 2, 3, 7, 59)),  # one hour
        (D(2024, 10, 20, 5, 30), D(2025, 4, 2, 3, 10)),  # from before the data to after it: edge buckets whole
        (D(2025, 1, 20, 9), D(2025, 6, 1)),  # to after the data
    ]
    filters = [{}, {"platform": ["web"]}, {"country": ["US"]}, {"event_type": ["click"]}, {"device": ["mobile"]},
               {"platform": [""]}, {"country": [""]}, {"platform": ["ios", "android"]},
               {"platform": ["web"], "country": ["DE"]}, {"event_type": ["purchase"], "country": ["JP"]},
               {"country": ["absent"]}]
    for a, b in windows:
        for tb in ("hour", "day", "week", "month"):
            if tb == "hour" and (b - a).days > 40:
                continue
            for f in filters:
                check(client, oracle, PipeQuery("session_metrics", a, b, time_bucket=tb, filters=f), False)
                check(client, oracle, PipeQuery("user_engagement_time_series", a, b, time_bucket=tb, filters=f), False)
                for seg in (True, False):
                    check(client, oracle, PipeQuery("active_users", a, b, time_bucket=tb, filters=f,
                                                    segment_by_platform=seg), False)


def test_cached_answers_equal_the_reference(many_users):
    client, oracle, _ = many_users
    rng = random.Random(5)
    lo = END - dt.timedelta(days=120)
    for _ in range(40):
        a = lo + dt.timedelta(hours=rng.randrange(24 * 110))
        b = a + dt.timedelta(hours=rng.randrange(24 * 20), minutes=rng.randrange(60))
        pipe = rng.choice(["session_metrics", "user_engagement_time_series", "active_users",
                           "geographic_distribution", "event_metrics"])
        q = PipeQuery(pipe, a, b, time_bucket=rng.choice(["hour", "day", "week"]),
                      filters=rng.choice([{}, {"platform": ["web"]}, {"country": ["US", "DE"]}]),
                      limit=rng.choice([1, 5, 100]), group_by=rng.choice(["country", "region", "city"]))
        for cached in (True, True, False):  # miss, hit, bypass
            check(client, oracle, q, cached)


def test_cache_is_per_snapshot(many_users):
    """A new snapshot answers with its own data, never with an answer cached for the previous one."""
    client, oracle, settings = many_users
    q = PipeQuery("event_metrics", END - dt.timedelta(days=200), END + dt.timedelta(days=30))
    before = client.get(f"/v0/pipes/event_metrics.json?{query_string(q)}").json()["data"]
    # answered from the cubes held in memory for the snapshot (serving/cubes.py): loaded now, for
    # this snapshot; the new one must load its own
    from_cubes = [PipeQuery("user_engagement_time_series", END, END + dt.timedelta(days=3, seconds=-1), time_bucket="day"),
                  PipeQuery("active_users", END, END + dt.timedelta(days=3, seconds=-1), time_bucket="day"),
                  PipeQuery("event_metrics", END + dt.timedelta(days=1), END + dt.timedelta(days=2, seconds=-1))]
    for cq in from_cubes:
        client.get(f"/v0/pipes/{cq.pipe}.json?{query_string(cq)}", headers={"Cache-Control": "no-cache"})
    from engage.cli import run_refresh

    generate(events=500, days=2, seed=13, out=settings.landing / "later", end=END + dt.timedelta(days=3))
    assert run_refresh(settings).success
    oracle.execute("DELETE FROM user_events")
    oracle.execute(f"ATTACH '{settings.warehouse_path}' AS wh (READ_ONLY)")
    oracle.execute("INSERT INTO user_events SELECT * EXCLUDE (_batch_id) FROM wh.raw.user_events")
    oracle.execute("DETACH wh")
    import time

    snap = current_snapshot(settings).snapshot_id
    deadline = time.time() + 10
    while client.get(f"/v0/pipes/event_metrics.json?{query_string(q)}").headers["X-Engage-Snapshot"] != snap:
        assert time.time() < deadline
        time.sleep(0.2)
    after = client.get(f"/v0/pipes/event_metrics.json?{query_string(q)}").json()["data"]
    assert after != before
    check(client, oracle, q, True)
    for cq in from_cubes:
        check(client, oracle, cq, False)


def test_ranking_fast_path_equals_the_reference(many_users):
    """Whole-day windows (user spans + day sums): full data, a week, a day, windows that many users'
    activity spans strictly contain (the checked-against-the-daily-mart case), and filters."""
    client, oracle, _ = many_users
    # users seen in several cities of a region / regions of a country: each level's spans must count
    # them once (macros/spans.sql, `levels`)
    for level in ("country, region", "country"):
        travellers = oracle.execute(f"SELECT count(*) FROM (SELECT user_id FROM user_events WHERE country <> '' "
                                    f"GROUP BY user_id, {level} HAVING count(DISTINCT (region, city)) > 1)").fetchone()[0]
        assert travellers > 20, level
    lo = END - dt.timedelta(days=120)
    windows = [
        (lo, END + dt.timedelta(days=1) - dt.timedelta(seconds=1)),
        (D(2025, 1, 6), D(2025, 1, 12, 23, 59, 59)),
        (D(2024, 12, 25), D(2024, 12, 25, 23)),
        (D(2024, 12, 1), D(2025, 1, 31, 23, 59, 59)),
        (D(2024, 9, 1), D(2024, 11, 2, 23, 0)),  # starts before the data
        (D(2024, 11, 6), D(2025, 2, 24, 23, 59, 59)),  # most of the data: spans, many of them undecided
        (D(2024, 10, 1), D(2025, 2, 27, 23, 59, 59)),
        (D(2024, 12, 1, 1), D(2025, 1, 31, 23, 59, 59)),  # not whole days: the general path
        (D(2024, 12, 1), D(2024, 12, 31, 23, 59, 59)),  # one month: the cubes' bucket (and below)
        (D(2024, 12, 30), D(2025, 1, 5, 23, 59, 59)),  # an ISO week across a year's end
        (D(2025, 3, 1), D(2025, 3, 31, 23)),  # a month with a day of late events only
        (D(2024, 8, 5), D(2024, 8, 11, 23, 59, 59)),  # a week before the data
        # reaching past the data at an hour inside a day: cut at the data's days (span counts)
        (D(2024, 10, 3, 7, 15), D(2025, 1, 10, 23, 59, 59)),
        (D(2025, 1, 20), D(2025, 4, 2, 5, 30)),
        (D(2025, 2, 20, 13), D(2025, 5, 1, 4)),  # and an hour inside a day with data: not whole days
    ]
    geo_filters = [{}, {"event_type": ["page_view"]}, {"platform": ["ios"]}, {"device": ["tablet"]},
                   {"country": ["US"]}, {"country": ["DE", "FR", ""]}, {"country": ["JP"], "platform": ["web"]},
                   {"platform": [""]}, {"platform": ["ios", "web"]}, {"event_type": ["absent"]}]
    event_filters = [{}, {"platform": ["web"]}, {"device": ["mobile"]}, {"country": ["IN"]}, {"country": [""]},
                     {"country": ["US", "GB"]}, {"platform": ["web"], "device": ["desktop"]}]
    for a, b in windows:
        for f in geo_filters:
            for g in ("country", "region", "city"):
                check(client, oracle, PipeQuery("geographic_distribution", a, b, filters=f, group_by=g,
                                                limit=10000), False)
            check(client, oracle, PipeQuery("geographic_distribution", a, b, filters=f, limit=3), False)
        for f in event_filters:
            for limit in (1, 10000):
                check(client, oracle, PipeQuery("event_metrics", a, b, filters=f, limit=limit), False)


def test_fast_paths_do_not_fall_back(many_users):
    """The fast paths really answer (they fall back to the general path only when they cannot)."""
    from serving import fastpath
    from serving.params import GROUP_BY
    from serving.params import PipeQuery as ServingQuery
    from serving.pipes import PIPES

    _, oracle, settings = many_users

    def general(*_):
        raise AssertionError("fell back to the general path")

    con = duckdb.connect(str(current_snapshot(settings).path), read_only=True)
    try:
        whole = (D(2025, 1, 1), D(2025, 1, 31, 23, 59, 59))
        most = (D(2024, 11, 6), D(2025, 2, 24, 23, 59, 59))
        cases = [
            (fastpath.sessions(general), PipeQuery("session_metrics", *whole, filters={"device": ["mobile"]})),
            (fastpath.sessions(general), PipeQuery("session_metrics", D(2024, 11, 1), D(2025, 1, 31, 23, 59, 59),
                                                   time_bucket="month", filters={"platform": [""]})),
            (fastpath.engagement(general), PipeQuery("user_engagement_time_series", *whole, filters={"country": ["US"]})),
            (fastpath.active_users(general), PipeQuery("active_users", D(2025, 1, 6), D(2025, 2, 2, 23, 59, 59),
                                                       time_bucket="week",
                                                       filters={"event_type": ["click"]})),
            (fastpath.ranking(general, lambda q: GROUP_BY[q.group_by]),
             PipeQuery("geographic_distribution", *most, filters={"platform": ["web"], "country": ["US", "DE"]})),
            (fastpath.ranking(general, lambda q: ("event_type",)), PipeQuery("event_metrics", *most)),
            (fastpath.ranking(general, lambda q: ("event_type",)),
             PipeQuery("event_metrics", *most, filters={"country": ["US"]})),
            # a window reaching past the data, at hours inside days: the cube for its edge buckets,
            # the span counts (cut at the data's days) for the rankings
            (fastpath.engagement(general), PipeQuery("user_engagement_time_series", D(2024, 10, 20, 5, 30),
                                                     D(2025, 4, 2, 3, 10), time_bucket="month")),
            (fastpath.active_users(general), PipeQuery("active_users", D(2024, 10, 20, 5, 30), D(2025, 4, 2, 3, 10),
                                                       time_bucket="month", segment_by_platform=True)),
            (fastpath.ranking(general, lambda q: GROUP_BY[q.group_by]),
             PipeQuery("geographic_distribution", D(2024, 10, 3, 7, 15), D(2025, 1, 10, 23, 59, 59),
                       group_by="city", filters={"event_type": ["click"]})),
            (fastpath.ranking(general, lambda q: ("event_type",)),
             PipeQuery("event_metrics", D(2025, 1, 20), D(2025, 4, 2, 5, 30), filters={"device": ["mobile"]})),
            # the event-type masks: hours at the edges, several filters
            (fastpath.masked_ranking(general, lambda q: ("event_type",)),
             PipeQuery("event_metrics", D(2024, 12, 1, 5), D(2025, 1, 20, 17, 59, 59),
                       filters={"country": ["US", "DE"], "platform": ["web"]})),
            (fastpath.masked_ranking(general, lambda q: GROUP_BY[q.group_by]),
             PipeQuery("geographic_distribution", D(2024, 12, 1, 5), D(2025, 1, 20, 17, 59, 59), group_by="region",
                       filters={"event_type": ["click", "page_view"], "platform": ["web"]})),
        ]
        for answer, q in cases:
            sq = ServingQuery(q.pipe, q.start, q.end, q.time_bucket, q.filters, q.limit, q.group_by,
                              q.segment_by_platform)
            res = answer(con.cursor(), sq, PIPES[q.pipe])
            names = [c.name for c in res.columns]
            got = expected_rows([dict(zip(names, r)) for r in res.rows])
            assert got and len(got) == len(reference_answer(oracle, q))
            assert_rows_equal(got, expected_rows(reference_answer(oracle, q)), q)
    finally:
        con.close()


def test_a_snapshot_with_spans_of_an_older_layout_takes_the_general_path(many_users, tmp_path):
    """A snapshot published before geo_user_spans had its group_by levels (served until the next
    publish after an upgrade) is answered by the general path, not an error."""
    from serving import fastpath
    from serving.params import GROUP_BY
    from serving.params import PipeQuery as ServingQuery
    from serving.pipes import PIPES

    _, _, settings = many_users
    old = tmp_path / "old.duckdb"
    shutil.copy(current_snapshot(settings).path, old)
    with duckdb.connect(str(old)) as con:
        con.execute("CREATE OR REPLACE TABLE geo_user_spans AS SELECT * EXCLUDE (group_by) FROM geo_user_spans "
                    "WHERE group_by = 'city'")
    answers = []
    answer = fastpath.ranking(lambda cur, q, pipe: answers.append(q) or "general", lambda q: GROUP_BY[q.group_by])
    q = ServingQuery("geographic_distribution", D(2024, 11, 1), D(2025, 3, 1, 23, 59, 59))
    with duckdb.connect(str(old), read_only=True) as con:
        assert answer(con.cursor(), q, PIPES[q.pipe]) == "general"
    assert answers == [q]


def test_rankings_over_one_calendar_bucket_read_the_cube(many_users):
    """A ranking over exactly one day, ISO week or month without filters (a country list aside) is
    the cube's rows of that bucket: as many rows read as there are groups, the reference's answer."""
    client, oracle, _ = many_users
    buckets_ = [(D(2025, 1, 14), D(2025, 1, 14, 23, 59, 59)), (D(2025, 1, 13), D(2025, 1, 19, 23, 59, 59)),
                (D(2025, 1, 1), D(2025, 1, 31, 23, 59, 59))]
    queries = [PipeQuery("event_metrics", a, b, limit=limit) for a, b in buckets_ for limit in (2, 100)]
    queries += [PipeQuery("geographic_distribution", a, b, group_by=g, filters=f, limit=limit)
                for a, b in buckets_ for g in ("country", "region", "city")
                for f in ({}, {"country": ["US", "DE"]}) for limit in (3, 10000)]
    for q in queries:
        r = client.get(f"/v0/pipes/{q.pipe}.json?{query_string(q)}", headers={"Cache-Control": "no-cache"})
        body = r.json()
        assert_rows_equal(body["data"], expected_rows(reference_answer(oracle, q)), q)
        groups = reference_rows_before_limit(oracle, q)
        assert body["rows_before_limit_at_least"] == groups > 1, q
        assert body["statistics"]["rows_read"] == groups, q  # one cube row per group: nothing else read


def test_calendar_bucket():
    from serving.fastpath import calendar_bucket

    assert calendar_bucket(D(2025, 1, 14), D(2025, 1, 14, 23)) == "day"
    assert calendar_bucket(D(2025, 1, 13), D(2025, 1, 19, 23)) == "week"  # Monday .. Sunday
    assert calendar_bucket(D(2024, 2, 1), D(2024, 2, 29, 23)) == "month"
    assert calendar_bucket(D(2024, 12, 1), D(2024, 12, 31, 23)) == "month"
    for a, b in [(D(2025, 1, 14), D(2025, 1, 15, 23)), (D(2025, 1, 14), D(2025, 1, 20, 23)),
                 (D(2024, 2, 1), D(2024, 2, 28, 23)), (D(2025, 1, 14, 1), D(2025, 1, 14, 23)),
                 (D(2025, 1, 14), D(2025, 1, 14, 22))]:
        assert calendar_bucket(a, b) is None, (a, b)


def test_event_type_bits_are_stable_across_runs(many_users):
    """A type keeps its bit across incremental runs (the stored masks stay valid); types first seen
    later get the next bits, even one whose events are late (older than the known types' first)."""
    _, _, settings = many_users
    with duckdb.connect(str(current_snapshot(settings).path), read_only=True) as con:
        bits = dict(con.execute("SELECT event_type, bit FROM event_type_bits").fetchall())
    first = FIRST_RUN["type_bits"]
    assert len(first) >= 5 and sorted(first.values()) == list(range(len(first)))
    assert {t: bits[t] for t in first} == first
    assert sorted(bits[t] for t in ("aa_late_type", "zz_new_type")) == [len(first), len(first) + 1]


def test_rankings_over_any_window_equal_the_reference(many_users):
    """Windows the spans leave (up to 60 days, whole days or not, any filters): the event-type
    masks, including the late new types' day."""
    client, oracle, _ = many_users
    _, day, platform = FIRST_RUN["active_user"]
    windows = [(day, day + dt.timedelta(hours=23, minutes=59, seconds=59)),
               (day - dt.timedelta(days=2, hours=-3), day + dt.timedelta(hours=4, minutes=30)),
               (day + dt.timedelta(hours=4), day + dt.timedelta(days=3, hours=23))]
    rng = random.Random(7)
    for i in range(24):
        a = END - dt.timedelta(days=125) + dt.timedelta(hours=rng.randrange(130 * 24))
        if i % 2:
            a = a.replace(hour=0)
            windows.append((a, a + dt.timedelta(days=rng.randint(1, 60), seconds=-1)))
        else:
            windows.append((a, a + dt.timedelta(hours=rng.randint(1, 60 * 24), minutes=59, seconds=59)))
    event_filters = [{}, {"platform": [platform]}, {"country": ["US", "DE"]},
                     {"device": ["desktop"], "platform": ["web"]}, {"country": [""]}, {"country": ["US"]}]
    geo_filters = [{}, {"event_type": ["aa_late_type"]}, {"event_type": ["click", "zz_new_type", "absent"]},
                   {"country": ["US"], "platform": ["web"]}, {"event_type": ["page_view"], "device": ["mobile"]},
                   {"event_type": ["absent"]}, {"platform": [platform]}, {"country": ["DE", ""]}]
    for i, (a, b) in enumerate(windows):
        check(client, oracle, PipeQuery("event_metrics", a, b, filters=event_filters[i % len(event_filters)],
                                        limit=(2, 10000)[i % 2]), False)
        check(client, oracle, PipeQuery("geographic_distribution", a, b, filters=geo_filters[i % len(geo_filters)],
                                        group_by=("country", "region", "city")[i % 3], limit=(10000, 3)[i % 2]), False)


def _event_metrics_on(path, q: PipeQuery, general):
    from serving import fastpath
    from serving.params import PipeQuery as ServingQuery
    from serving.pipes import PIPES

    sq = ServingQuery(q.pipe, q.start, q.end, q.time_bucket, q.filters, q.limit, q.group_by, q.segment_by_platform)
    with duckdb.connect(str(path), read_only=True) as con:
        res = fastpath.masked_ranking(general, lambda q: ("event_type",))(con.cursor(), sq, PIPES[q.pipe])
    return expected_rows([dict(zip([c.name for c in res.columns], r)) for r in res.rows])


def _snapshot_copy(settings, path, *statements: str):
    shutil.copy(current_snapshot(settings).path, path)
    with duckdb.connect(str(path)) as con:
        for sql in statements:
            con.execute(sql)
    return path


def test_event_type_masks_count_every_bit(many_users, tmp_path):
    """The top bits of the UBIGINT masks (up to bit 63) count like the low ones."""
    _, oracle, settings = many_users
    with duckdb.connect(str(current_snapshot(settings).path), read_only=True) as con:
        shift = 64 - con.execute("SELECT max(bit) + 1 FROM event_type_bits").fetchone()[0]
    path = _snapshot_copy(settings, tmp_path / "high-bits.duckdb", f"UPDATE event_type_bits SET bit = bit + {shift}",
                          f"UPDATE user_event_types_daily SET event_types = event_types << {shift}")

    def general(*_):
        raise AssertionError("fell back to the general path")

    for q in (PipeQuery("event_metrics", D(2024, 12, 1), D(2025, 1, 20, 23, 59, 59)),
              PipeQuery("event_metrics", D(2024, 12, 1, 5), D(2025, 2, 3, 11, 59, 59), filters={"country": ["US"]})):
        assert_rows_equal(_event_metrics_on(path, q, general), expected_rows(reference_answer(oracle, q)), q)


def test_event_metrics_without_usable_masks_take_the_general_path(many_users, tmp_path):
    """More event types than a mask has bits, or a snapshot published before the masks existed:
    the general path answers."""
    _, _, settings = many_users
    q = PipeQuery("event_metrics", D(2024, 12, 1), D(2025, 1, 20, 23, 59, 59))
    for name, sql in (("many-types", "INSERT INTO event_type_bits VALUES ('type_65', 64)"),
                      ("no-masks", "DROP TABLE user_event_types_daily"),
                      ("no-bits", "DROP TABLE event_type_bits")):
        path = _snapshot_copy(settings, tmp_path / f"{name}.duckdb", sql)
        calls = []

        def general(cur, sq, pipe):
            calls.append(sq)
            raise LookupError("general")

        with pytest.raises(LookupError):
            _event_metrics_on(path, q, general)
        assert len(calls) == 1, name


def test_place_hashes_stand_for_one_place_each():
    from serving.fastpath import hash_index

    assert hash_index([(7, "US", "Texas"), (9, "DE", "Berlin")]) == {7: ("US", "Texas"), 9: ("DE", "Berlin")}
    assert hash_index([(7, "US", "Texas"), (7, "DE", "Berlin")]) is None  # a collision: group by the names


@pytest.mark.parametrize("by_hash", [True, False], ids=["places-by-hash", "places-by-name"])
def test_geographic_masks_equal_the_reference_by_hash_and_by_name(many_users, by_hash):
    """The masks path groups places by a hash of their names, or by the names when the snapshot has
    two places with the same hash (the snapshot fact says so)."""
    from serving import fastpath, snapshots
    from serving.params import GROUP_BY
    from serving.params import PipeQuery as ServingQuery
    from serving.pipes import PIPES

    _, oracle, settings = many_users

    def general(*_):
        raise AssertionError("fell back to the general path")

    facts = {} if by_hash else {("place_hashes", fastpath.GEO_DAY_SUMS.table, keys): None
                                for keys in GROUP_BY.values()}
    token = snapshots._FACTS.set(facts)
    try:
        with duckdb.connect(str(current_snapshot(settings).path), read_only=True) as con:
            for i, group_by in enumerate(("country", "region", "city")):
                q = PipeQuery("geographic_distribution", D(2024, 12, 1, 5 * i), D(2025, 1, 20 + i, 17, 59, 59),
                              group_by=group_by, filters=({}, {"platform": ["web"]}, {"event_type": ["click"]})[i])
                sq = ServingQuery(q.pipe, q.start, q.end, q.time_bucket, q.filters, q.limit, q.group_by,
                                  q.segment_by_platform)
                res = fastpath.masked_ranking(general, lambda q: GROUP_BY[q.group_by])(con.cursor(), sq, PIPES[q.pipe])
                got = expected_rows([dict(zip([c.name for c in res.columns], r)) for r in res.rows])
                assert_rows_equal(got, expected_rows(reference_answer(oracle, q)), q)
        assert (facts.get(("place_hashes", fastpath.GEO_DAY_SUMS.table, GROUP_BY["city"])) is not None) == by_hash
    finally:
        snapshots._FACTS.reset(token)


@pytest.mark.parametrize("snapshot", ["as-published", "many-types", "no-masks", "no-bits"])
def test_active_users_read_whole_days_from_the_masks_or_the_daily_mart(many_users, tmp_path, snapshot):
    """active_users' general path reads whole days from the event-type masks, and from
    active_users_daily when the snapshot's masks cannot answer: the same answers either way,
    including a type the snapshot has never seen."""
    from serving.params import PipeQuery as ServingQuery
    from serving.pipes import PIPES, _active_users

    _, oracle, settings = many_users
    statements = {"as-published": (), "many-types": ("INSERT INTO event_type_bits VALUES ('type_65', 64)",),
                  "no-masks": ("DROP TABLE user_event_types_daily",), "no-bits": ("DROP TABLE event_type_bits",)}
    path = _snapshot_copy(settings, tmp_path / f"{snapshot}.duckdb", *statements[snapshot])
    queries = [PipeQuery("active_users", D(2024, 12, 3, 5), D(2025, 1, 20, 17, 59, 59), time_bucket="month"),
               PipeQuery("active_users", D(2024, 12, 3), D(2025, 1, 20, 23, 59, 59), time_bucket="week",
                         filters={"event_type": ["click", "aa_late_type", "absent"], "country": ["US", "DE"]},
                         segment_by_platform=False),
               PipeQuery("active_users", D(2024, 12, 3), D(2024, 12, 9, 23, 59, 59),
                         filters={"event_type": ["absent"]})]
    with duckdb.connect(str(path), read_only=True) as con:
        for q in queries:
            sq = ServingQuery(q.pipe, q.start, q.end, q.time_bucket, q.filters, q.limit, q.group_by,
                              q.segment_by_platform)
            res = _active_users(con.cursor(), sq, PIPES[q.pipe])
            got = expected_rows([dict(zip([c.name for c in res.columns], r)) for r in res.rows])
            assert_rows_equal(got, expected_rows(reference_answer(oracle, q)), q)
