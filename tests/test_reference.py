"""Hand-checked answers for the test oracle (tests/reference.py).

Every expected value below is worked out by hand from CONTRACT.md's rules, in the
comments next to it; nothing here is computed by the code under test.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

try:  # works whether or not tests/ is a package
    from tests.reference import (
        PIPE_FILTERS,
        PIPES,
        PipeQuery,
        reference_answer,
        reference_rows_before_limit,
    )
except ImportError:  # pragma: no cover
    from reference import PIPE_FILTERS, PIPES, PipeQuery, reference_answer, reference_rows_before_limit

D = dt.datetime

SCHEMA = """
CREATE TABLE {name} (
    timestamp TIMESTAMP, user_id VARCHAR, event_type VARCHAR, session_id VARCHAR,
    duration UINTEGER, device VARCHAR, platform VARCHAR, page VARCHAR,
    country VARCHAR, region VARCHAR, city VARCHAR)
"""

# The hand-built dataset (numbers in comments are used in the reasoning below).
# 2025-01-01 is a Wednesday; its ISO week starts Monday 2024-12-30.
#  ts                    user event  sess dur device   platform page country region city
EVENTS = [
    (D(2025, 1, 1, 23, 50), "u1", "view", "s1", 10, "desktop", "Web", "/a", "US", "CA", "SF"),  # 1
    (D(2025, 1, 2, 0, 10), "u1", "click", "s1", 20, "mobile", "web", "/b", "FR", "IDF", "Paris"),  # 2
    (D(2025, 1, 2, 9, 0), "u2", "view", "s2", 5, "mobile", "web", "/a", "US", "NY", "NYC"),  # 3
    (D(2025, 1, 2, 9, 0), "u2", "click", "s2", 7, "desktop", "web", "/c", "DE", "BE", "Berlin"),  # 4
    (D(2025, 1, 2, 9, 30), "u2", "view", "s2", 3, "tablet", "", "/d", "US", "NY", "NYC"),  # 5
    (D(2025, 1, 2, 12, 0), "u3", "view", "s3", 0, "mobile", "", "/a", "", "", ""),  # 6
    (D(2025, 1, 3, 8, 0), "u1", "view", "s4", 100, "desktop", "Web", "/a", "US", "CA", "LA"),  # 7
    (D(2025, 1, 1, 10, 0), "u4", "view", "s0", 2, "mobile", "web", "/a", "FR", "IDF", "Paris"),  # 8
]
# Sessions (over all rows):
#   s0: start 01-01 10:00, 1 event (bounce), duration 2,   first = (web, mobile, FR)
#   s1: start 01-01 23:50, 2 events (crosses midnight), duration 30, first = (Web, desktop, US)
#   s2: start 01-02 09:00, 3 events, duration 15; rows 3 and 4 tie on the first timestamp:
#       (web, mobile, US) vs (web, desktop, DE) -> smallest is (web, desktop, DE)
#   s3: start 01-02 12:00, 1 event (bounce), duration 0,   first = ('', mobile, '')
#   s4: start 01-03 08:00, 1 event (bounce), duration 100, first = (Web, desktop, US)

FULL = (D(2025, 1, 1), D(2025, 1, 3, 23, 59, 59))


def _make_con(rows=EVENTS, name="user_events", collation: str | None = None):
    con = duckdb.connect()
    if collation:
        con.execute(f"SET default_collation = '{collation}'")
    con.execute(SCHEMA.format(name=f'"{name}"'))
    if rows:
        con.executemany(f'INSERT INTO "{name}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', rows)
    return con


@pytest.fixture(scope="module")
def con():
    c = _make_con()
    yield c
    c.close()


def ask(con, pipe, start, end, **kw):
    return reference_answer(con, PipeQuery(pipe, start, end, **kw))


def sm(ts, n, avg, bounce):
    return {"time_bucket": ts, "session_count": n, "avg_session_duration": avg, "bounce_rate": bounce}


def ts_row(ts, n, users, avg):
    return {"time_bucket": ts, "event_count": n, "unique_users": users, "avg_duration": avg}


def au(ts, platform, n):
    return {"time_bucket": ts, "platform": platform, "active_users": n}


def em(event_type, n, users, avg):
    return {"event_type": event_type, "event_count": n, "unique_users": users, "avg_duration": avg}


# --------------------------------------------------------------------------- module API


def test_api_constants():
    assert PIPES == (
        "session_metrics",
        "user_engagement_time_series",
        "active_users",
        "geographic_distribution",
        "event_metrics",
    )
    assert PIPE_FILTERS == {
        "session_metrics": ("platform", "device", "country"),
        "user_engagement_time_series": ("event_type", "platform", "device", "country"),
        "active_users": ("event_type", "country", "platform"),
        "geographic_distribution": ("event_type", "platform", "device", "country"),
        "event_metrics": ("platform", "device", "country"),
    }
    q = PipeQuery("event_metrics", D(2025, 1, 1), D(2025, 1, 2))
    assert (q.time_bucket, q.filters, q.limit, q.group_by, q.segment_by_platform) == ("day", {}, 100, "region", True)


@pytest.mark.parametrize(
    "kw",
    [
        {"time_bucket": "year"},
        {"group_by": "continent"},
        {"limit": 0},
        {"limit": 10_001},
        {"filters": {"page": ["/a"]}},
        {"start": D(2025, 1, 2), "end": D(2025, 1, 1)},
    ],
)
def test_invalid_queries_raise(con, kw):
    args = {"pipe": "event_metrics", "start": D(2025, 1, 1), "end": D(2025, 1, 2), **kw}
    with pytest.raises(ValueError):
        reference_answer(con, PipeQuery(**args))
    with pytest.raises(ValueError):
        reference_answer(con, PipeQuery(**{**args, "pipe": "nope"}))


# --------------------------------------------------------------------------- session_metrics


def test_session_metrics_full_window(con):
    assert ask(con, "session_metrics", *FULL) == [
        sm(D(2025, 1, 1), 2, 16.0, 0.5),  # s0 (2, bounce) + s1 (30)
        sm(D(2025, 1, 2), 2, 7.5, 0.5),  # s2 (15) + s3 (0, bounce)
        sm(D(2025, 1, 3), 1, 100.0, 1.0),  # s4 (bounce)
    ]


def test_session_metrics_partial_first_day_and_all_rows_duration(con):
    # H_start = 01-01 12:00: s0 (10:00) is out; s1 keeps its full duration 30 even
    # though its second event is on 01-02; the label is still 2025-01-01 00:00.
    assert ask(con, "session_metrics", D(2025, 1, 1, 12), D(2025, 1, 2, 23, 59, 59)) == [
        sm(D(2025, 1, 1), 1, 30.0, 0.0),
        sm(D(2025, 1, 2), 2, 7.5, 0.5),
    ]
    # A window on 01-02 only: s1 has an event at 00:10 but starts on 01-01 -> excluded.
    assert ask(con, "session_metrics", D(2025, 1, 2), D(2025, 1, 2, 23, 59, 59)) == [
        sm(D(2025, 1, 2), 2, 7.5, 0.5),
    ]


def test_session_metrics_hour_buckets_gap_filled(con):
    # H_start 23:00, H_end 01:00 (01:30 truncated) -> three hourly buckets.
    assert ask(con, "session_metrics", D(2025, 1, 1, 23), D(2025, 1, 2, 1, 30), time_bucket="hour") == [
        sm(D(2025, 1, 1, 23), 1, 30.0, 0.0),  # s1
        sm(D(2025, 1, 2, 0), 0, None, None),
        sm(D(2025, 1, 2, 1), 0, None, None),
    ]


def test_session_metrics_filters_use_first_event_with_tie_break(con):
    # platform 'web' (case-sensitive): s0 and s2 (tie-break keeps platform web).
    assert ask(con, "session_metrics", *FULL, filters={"platform": ["web"]}) == [
        sm(D(2025, 1, 1), 1, 2.0, 1.0),
        sm(D(2025, 1, 2), 1, 15.0, 0.0),
        sm(D(2025, 1, 3), 0, None, None),
    ]
    # device mobile: s0 and s3; s2's first event is the (web, desktop, DE) one, so not s2.
    assert ask(con, "session_metrics", *FULL, filters={"device": ["mobile"]}) == [
        sm(D(2025, 1, 1), 1, 2.0, 1.0),
        sm(D(2025, 1, 2), 1, 0.0, 1.0),
        sm(D(2025, 1, 3), 0, None, None),
    ]
    # country US: s1 and s4 (s2's first-event country is DE after the tie-break).
    assert ask(con, "session_metrics", *FULL, filters={"country": ["US"]}) == [
        sm(D(2025, 1, 1), 1, 30.0, 0.0),
        sm(D(2025, 1, 2), 0, None, None),
        sm(D(2025, 1, 3), 1, 100.0, 1.0),
    ]
    assert ask(con, "session_metrics", *FULL, filters={"country": ["DE"]}) == [
        sm(D(2025, 1, 1), 0, None, None),
        sm(D(2025, 1, 2), 1, 15.0, 0.0),
        sm(D(2025, 1, 3), 0, None, None),
    ]
    # A list means any of them; '' is a platform like any other: s1, s3, s4.
    assert ask(con, "session_metrics", *FULL, filters={"platform": ["Web", ""]}) == [
        sm(D(2025, 1, 1), 1, 30.0, 0.0),
        sm(D(2025, 1, 2), 1, 0.0, 1.0),
        sm(D(2025, 1, 3), 1, 100.0, 1.0),
    ]
    # Filters combine with AND: web + mobile -> only s0.
    assert ask(con, "session_metrics", *FULL, filters={"platform": ["web"], "device": ["mobile"]}) == [
        sm(D(2025, 1, 1), 1, 2.0, 1.0),
        sm(D(2025, 1, 2), 0, None, None),
        sm(D(2025, 1, 3), 0, None, None),
    ]


def test_session_metrics_ignores_filters_it_does_not_have(con):
    assert ask(con, "session_metrics", *FULL, filters={"event_type": ["nope"]}) == ask(con, "session_metrics", *FULL)
    # ... and an empty list is no filter.
    assert ask(con, "session_metrics", *FULL, filters={"platform": []}) == ask(con, "session_metrics", *FULL)


def test_session_identified_by_session_id_alone():
    # One session id shared by two users is one session of 2 events (no bounce).
    c = _make_con(
        [
            (D(2025, 5, 1, 8), "a", "view", "S", 4, "d", "p", "/", "c", "r", "x"),
            (D(2025, 5, 1, 9), "b", "view", "S", 6, "d", "p", "/", "c", "r", "x"),
        ]
    )
    assert ask(c, "session_metrics", D(2025, 5, 1), D(2025, 5, 1, 23, 59, 59)) == [sm(D(2025, 5, 1), 1, 10.0, 0.0)]


# --------------------------------------------------------------------------- user_engagement_time_series


def test_time_series_full_window(con):
    assert ask(con, "user_engagement_time_series", *FULL) == [
        ts_row(D(2025, 1, 1), 2, 2, 6.0),  # rows 8, 1: users u4, u1; (2 + 10) / 2
        ts_row(D(2025, 1, 2), 5, 3, 7.0),  # rows 2-6: u1, u2, u3; 35 / 5
        ts_row(D(2025, 1, 3), 1, 1, 100.0),  # row 7
    ]


def test_time_series_whole_hour_window(con):
    # start 01-01 12:00 drops row 8 (10:00); end 01-02 09:59 -> H_end 09:00, so row 5
    # at 09:30 is in (its hour is 09:00) while row 6 at 12:00 is out.
    assert ask(con, "user_engagement_time_series", D(2025, 1, 1, 12), D(2025, 1, 2, 9, 59)) == [
        ts_row(D(2025, 1, 1), 1, 1, 10.0),  # row 1
        ts_row(D(2025, 1, 2), 4, 2, 8.75),  # rows 2-5: u1, u2; 35 / 4
    ]
    # start 10:59:59 truncates to 10:00 (row 8 in); end 01-03 08:45 -> 08:00 (row 7 in).
    assert ask(con, "user_engagement_time_series", D(2025, 1, 1, 10, 59, 59), D(2025, 1, 3, 8, 45)) == [
        ts_row(D(2025, 1, 1), 2, 2, 6.0),
        ts_row(D(2025, 1, 2), 5, 3, 7.0),
        ts_row(D(2025, 1, 3), 1, 1, 100.0),
    ]
    # One second earlier than H = 08:00 excludes row 7 but the bucket 01-03 still exists.
    assert ask(con, "user_engagement_time_series", D(2025, 1, 3), D(2025, 1, 3, 7, 59, 59)) == [
        ts_row(D(2025, 1, 3), 0, 0, None),
    ]


def test_time_series_filters(con):
    assert ask(con, "user_engagement_time_series", *FULL, filters={"event_type": ["click"]}) == [
        ts_row(D(2025, 1, 1), 0, 0, None),
        ts_row(D(2025, 1, 2), 2, 2, 13.5),  # rows 2 (u1, 20) and 4 (u2, 7)
        ts_row(D(2025, 1, 3), 0, 0, None),
    ]
    assert ask(
        con, "user_engagement_time_series", *FULL, filters={"platform": ["web"], "device": ["mobile"]}
    ) == [
        ts_row(D(2025, 1, 1), 1, 1, 2.0),  # row 8
        ts_row(D(2025, 1, 2), 2, 2, 12.5),  # rows 2 (u1, 20), 3 (u2, 5)
        ts_row(D(2025, 1, 3), 0, 0, None),
    ]
    assert ask(con, "user_engagement_time_series", *FULL, filters={"country": [""]}) == [
        ts_row(D(2025, 1, 1), 0, 0, None),
        ts_row(D(2025, 1, 2), 1, 1, 0.0),  # row 6
        ts_row(D(2025, 1, 3), 0, 0, None),
    ]


def test_time_series_week_and_month_buckets(con):
    # ISO weeks start on Monday: 2024-12-30 and 2025-01-06 (end is Monday 01-06).
    # unique_users is exact over the week (u1..u4 = 4), not a sum of days (2+3+1).
    assert ask(con, "user_engagement_time_series", D(2025, 1, 1), D(2025, 1, 6, 23, 59, 59), time_bucket="week") == [
        ts_row(D(2024, 12, 30), 8, 4, 18.375),  # 147 / 8
        ts_row(D(2025, 1, 6), 0, 0, None),
    ]
    assert ask(con, "user_engagement_time_series", D(2024, 12, 15), D(2025, 2, 1), time_bucket="month") == [
        ts_row(D(2024, 12, 1), 0, 0, None),
        ts_row(D(2025, 1, 1), 8, 4, 18.375),
        ts_row(D(2025, 2, 1), 0, 0, None),  # end 02-01 00:00 -> H_end is in February
    ]


def test_time_series_rows_before_limit_is_row_count(con):
    q = PipeQuery("user_engagement_time_series", *FULL, limit=1)
    assert len(reference_answer(con, q)) == 3  # limit does not cut time series
    assert reference_rows_before_limit(con, q) == 3


# --------------------------------------------------------------------------- active_users


def test_active_users_segmented(con):
    # Platforms in the window: '' (rows 5, 6), 'Web' (1, 7), 'web' (2, 3, 4, 8);
    # code-point order '' < 'Web' < 'web'.
    assert ask(con, "active_users", *FULL) == [
        au(D(2025, 1, 1), "", 0),
        au(D(2025, 1, 1), "Web", 1),  # u1
        au(D(2025, 1, 1), "web", 1),  # u4
        au(D(2025, 1, 2), "", 2),  # u2, u3
        au(D(2025, 1, 2), "Web", 0),
        au(D(2025, 1, 2), "web", 2),  # u1, u2 (u2 twice)
        au(D(2025, 1, 3), "", 0),
        au(D(2025, 1, 3), "Web", 1),  # u1
        au(D(2025, 1, 3), "web", 0),
    ]


def test_active_users_not_segmented(con):
    assert ask(con, "active_users", *FULL, segment_by_platform=False) == [
        {"time_bucket": D(2025, 1, 1), "active_users": 2},
        {"time_bucket": D(2025, 1, 2), "active_users": 3},
        {"time_bucket": D(2025, 1, 3), "active_users": 1},
    ]
    # Exact over a bucket spanning the days: u1..u4 = 4, not 2 + 3 + 1.
    assert ask(con, "active_users", *FULL, segment_by_platform=False, time_bucket="month") == [
        {"time_bucket": D(2025, 1, 1), "active_users": 4},
    ]


def test_active_users_filters(con):
    # country US: rows 1 (Web, u1), 3 (web, u2), 5 ('', u2), 7 (Web, u1).
    assert ask(con, "active_users", *FULL, filters={"country": ["US"]}) == [
        au(D(2025, 1, 1), "", 0),
        au(D(2025, 1, 1), "Web", 1),
        au(D(2025, 1, 1), "web", 0),
        au(D(2025, 1, 2), "", 1),
        au(D(2025, 1, 2), "Web", 0),
        au(D(2025, 1, 2), "web", 1),
        au(D(2025, 1, 3), "", 0),
        au(D(2025, 1, 3), "Web", 1),
        au(D(2025, 1, 3), "web", 0),
    ]
    # Only platforms with an event after the filters are gap-filled.
    assert ask(con, "active_users", *FULL, filters={"platform": ["Web"]}) == [
        au(D(2025, 1, 1), "Web", 1),
        au(D(2025, 1, 2), "Web", 0),
        au(D(2025, 1, 3), "Web", 1),
    ]
    # event_type click: rows 2 (web, u1), 4 (web, u2) -> only 'web'.
    assert ask(con, "active_users", *FULL, filters={"event_type": ["click"]}) == [
        au(D(2025, 1, 1), "web", 0),
        au(D(2025, 1, 2), "web", 2),
        au(D(2025, 1, 3), "web", 0),
    ]
    # device is not an active_users filter: ignored.
    assert ask(con, "active_users", *FULL, filters={"device": ["nothing"]}) == ask(con, "active_users", *FULL)


def test_active_users_empty_window(con):
    start, end = D(2025, 3, 1), D(2025, 3, 2, 5)
    assert ask(con, "active_users", start, end) == []  # no platform has an event
    assert ask(con, "active_users", start, end, segment_by_platform=False) == [
        {"time_bucket": D(2025, 3, 1), "active_users": 0},
        {"time_bucket": D(2025, 3, 2), "active_users": 0},
    ]


# --------------------------------------------------------------------------- geographic_distribution


def geo(*values):
    *keys, n, users, avg = values
    names = ("country", "region", "city")[: len(keys)]
    return {**dict(zip(names, keys)), "event_count": n, "unique_users": users, "avg_duration": avg}


def test_geographic_distribution_group_by_country(con):
    expected = [
        geo("US", 4, 2, 29.5),  # rows 1, 3, 5, 7: u1, u2; (10 + 5 + 3 + 100) / 4
        geo("FR", 2, 2, 11.0),  # rows 2, 8: u1, u4
        geo("", 1, 1, 0.0),  # row 6; '' < 'DE' on the tie
        geo("DE", 1, 1, 7.0),  # row 4
    ]
    q = PipeQuery("geographic_distribution", *FULL, group_by="country")
    assert reference_answer(con, q) == expected
    assert reference_rows_before_limit(con, q) == 4
    q.limit = 2
    assert reference_answer(con, q) == expected[:2]
    assert reference_rows_before_limit(con, q) == 4
    assert list(reference_answer(con, q)[0]) == ["country", "event_count", "unique_users", "avg_duration"]


def test_geographic_distribution_default_region(con):
    rows = ask(con, "geographic_distribution", *FULL)
    assert rows == [
        geo("FR", "IDF", 2, 2, 11.0),
        geo("US", "CA", 2, 1, 55.0),  # rows 1, 7: u1 only
        geo("US", "NY", 2, 1, 4.0),  # rows 3, 5: u2 only
        geo("", "", 1, 1, 0.0),
        geo("DE", "BE", 1, 1, 7.0),
    ]
    assert list(rows[0]) == ["country", "region", "event_count", "unique_users", "avg_duration"]


def test_geographic_distribution_city(con):
    assert ask(con, "geographic_distribution", *FULL, group_by="city") == [
        geo("FR", "IDF", "Paris", 2, 2, 11.0),
        geo("US", "NY", "NYC", 2, 1, 4.0),
        geo("", "", "", 1, 1, 0.0),
        geo("DE", "BE", "Berlin", 1, 1, 7.0),
        geo("US", "CA", "LA", 1, 1, 100.0),
        geo("US", "CA", "SF", 1, 1, 10.0),
    ]


def test_geographic_distribution_filters_and_window(con):
    # view events: rows 1, 3, 5, 6, 7, 8.
    assert ask(con, "geographic_distribution", *FULL, group_by="country", filters={"event_type": ["view"]}) == [
        geo("US", 4, 2, 29.5),
        geo("", 1, 1, 0.0),
        geo("FR", 1, 1, 2.0),  # row 8
    ]
    # 01-02 only: rows 2-6.
    assert ask(con, "geographic_distribution", D(2025, 1, 2), D(2025, 1, 2, 23, 59, 59), group_by="country") == [
        geo("US", 2, 1, 4.0),
        geo("", 1, 1, 0.0),
        geo("DE", 1, 1, 7.0),
        geo("FR", 1, 1, 20.0),
    ]
    # device tablet: row 5 only.
    assert ask(con, "geographic_distribution", *FULL, filters={"device": ["tablet"]}) == [geo("US", "NY", 1, 1, 3.0)]
    # nothing matches -> no rows
    assert ask(con, "geographic_distribution", *FULL, filters={"country": ["XX"]}) == []


# --------------------------------------------------------------------------- event_metrics


def test_event_metrics(con):
    q = PipeQuery("event_metrics", *FULL)
    assert reference_answer(con, q) == [
        em("view", 6, 4, 20.0),  # rows 1, 3, 5, 6, 7, 8: (10 + 5 + 3 + 0 + 100 + 2) / 6
        em("click", 2, 2, 13.5),  # rows 2, 4
    ]
    q.limit = 1
    assert reference_answer(con, q) == [em("view", 6, 4, 20.0)]
    assert reference_rows_before_limit(con, q) == 2


def test_event_metrics_filters(con):
    assert ask(con, "event_metrics", *FULL, filters={"platform": [""]}) == [em("view", 2, 2, 1.5)]  # rows 5, 6
    # event_type is not an event_metrics filter: ignored.
    assert ask(con, "event_metrics", *FULL, filters={"event_type": ["click"]}) == ask(con, "event_metrics", *FULL)
    # A window that cuts day 1 at 12:00 and day 2 at 09:00 (H_end): rows 1-5.
    assert ask(con, "event_metrics", D(2025, 1, 1, 12), D(2025, 1, 2, 9, 59, 59)) == [
        em("view", 3, 2, 6.0),  # rows 1, 3, 5: u1, u2; (10 + 5 + 3) / 3
        em("click", 2, 2, 13.5),  # rows 2, 4
    ]


# --------------------------------------------------------------------------- ordering & collation

ORDER_ROWS = [
    (D(2025, 2, 1, 1), "x", "b", "t1", 1, "d", "web", "/", "c", "r", "y"),
    (D(2025, 2, 1, 2), "x", "B", "t2", 2, "d", "Web", "/", "c", "r", "y"),
    (D(2025, 2, 1, 3), "x", "a", "t3", 3, "d", "", "/", "c", "r", "y"),
    (D(2025, 2, 1, 4), "x", "Éa", "t4", 4, "d", "Été", "/", "c", "r", "y"),
    (D(2025, 2, 1, 5), "x", "z", "t5", 5, "d", "zz", "/", "c", "r", "y"),
]
DAY = (D(2025, 2, 1), D(2025, 2, 1, 23, 59, 59))


@pytest.mark.parametrize("collation", [None, "nocase"])
def test_code_point_order_regardless_of_default_collation(collation):
    c = _make_con(ORDER_ROWS, collation=collation)
    # All counts tie at 1 -> event_type by code point: 'B' < 'a' < 'b' < 'z' < 'Éa'.
    assert [r["event_type"] for r in ask(c, "event_metrics", *DAY)] == ["B", "a", "b", "z", "Éa"]
    assert [r["platform"] for r in ask(c, "active_users", *DAY)] == ["", "Web", "web", "zz", "Été"]
    # Filters are exact and case-sensitive even under a NOCASE default collation.
    assert ask(c, "event_metrics", *DAY, filters={"platform": ["web"]}) == [em("b", 1, 1, 1.0)]
    assert ask(c, "active_users", *DAY, filters={"event_type": ["B"]}) == [au(D(2025, 2, 1), "Web", 1)]


@pytest.mark.parametrize("collation", [None, "nocase"])
def test_first_event_tie_break_by_code_point(collation):
    # Same timestamp, platforms 'web' and 'Web': the first event is the smallest
    # (platform, device, country) -> 'Web'.  Sessions 'S' and 's' are different.
    c = _make_con(
        [
            (D(2025, 2, 1, 10), "x", "view", "S", 1, "d", "web", "/", "c", "r", "y"),
            (D(2025, 2, 1, 10), "x", "view", "S", 2, "d", "Web", "/", "c", "r", "y"),
            (D(2025, 2, 1, 11), "x", "view", "s", 5, "d", "web", "/", "c", "r", "y"),
        ],
        collation=collation,
    )
    assert ask(c, "session_metrics", *DAY, filters={"platform": ["Web"]}) == [sm(D(2025, 2, 1), 1, 3.0, 0.0)]
    assert ask(c, "session_metrics", *DAY, filters={"platform": ["web"]}) == [sm(D(2025, 2, 1), 1, 5.0, 1.0)]
    assert ask(c, "session_metrics", *DAY) == [sm(D(2025, 2, 1), 2, 4.0, 0.5)]


# --------------------------------------------------------------------------- misc


def test_empty_table_gap_fill_and_table_name():
    c = _make_con([], name="other events")
    q = PipeQuery("session_metrics", D(2025, 1, 1, 22), D(2025, 1, 2, 1, 59, 59), time_bucket="hour")
    assert reference_answer(c, q, table="other events") == [
        sm(D(2025, 1, 1, 22), 0, None, None),
        sm(D(2025, 1, 1, 23), 0, None, None),
        sm(D(2025, 1, 2, 0), 0, None, None),
        sm(D(2025, 1, 2, 1), 0, None, None),
    ]
    q2 = PipeQuery("event_metrics", D(2025, 1, 1), D(2025, 1, 2))
    assert reference_answer(c, q2, table="other events") == []
    assert reference_rows_before_limit(c, q2, table="other events") == 0


def test_aware_datetimes_are_converted_to_utc(con):
    plus2 = dt.timezone(dt.timedelta(hours=2))
    # 01-03 10:00+02:00 = 08:00 UTC -> row 7 is in.
    rows = ask(con, "user_engagement_time_series", D(2025, 1, 3, 2, tzinfo=plus2), D(2025, 1, 3, 10, tzinfo=plus2))
    assert rows == [ts_row(D(2025, 1, 3), 1, 1, 100.0)]


def test_value_types(con):
    row = ask(con, "session_metrics", *FULL)[0]
    assert type(row["time_bucket"]) is dt.datetime and row["time_bucket"].tzinfo is None
    assert type(row["session_count"]) is int
    assert type(row["avg_session_duration"]) is float and type(row["bounce_rate"]) is float
    row = ask(con, "geographic_distribution", *FULL)[0]
    assert [type(v) for v in row.values()] == [str, str, int, int, float]
