"""Unit tests of the pipe parameters (serving/params.py), the window split (serving/query.py) and the
pipe declarations (serving/pipes.py). No HTTP, no data."""

from __future__ import annotations

from datetime import datetime as D

import pytest

from serving.errors import ApiError
from serving.params import MAX_BUCKETS, bucket_count, buckets, format_datetime, truncate
from serving.pipes import PIPES
from serving.query import window_parts


def parse(pipe: str, **params: str | list[str]):
    return PIPES[pipe].parse({k: v if isinstance(v, list) else [v] for k, v in params.items()})


def parse_error(pipe: str, **params: str) -> str:
    with pytest.raises(ApiError) as exc:
        parse(pipe, **params)
    assert exc.value.status_code == 400
    return exc.value.detail


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize("raw, expected", [
    ("2023-01-01 10:30:45", D(2023, 1, 1, 10, 30, 45)),
    ("2023-01-01T10:30:45", D(2023, 1, 1, 10, 30, 45)),
    ("2023-01-01", D(2023, 1, 1)),
    ("2024-02-29", D(2024, 2, 29)),
    ("0001-01-01", D(1, 1, 1)),
    ("9999-12-31 23:59:59", D(9999, 12, 31, 23, 59, 59)),
])
def test_accepted_date_forms(raw, expected):
    q = parse("event_metrics", start_date=raw, end_date="9999-12-31 23:59:59")
    assert q.start == expected


@pytest.mark.parametrize("raw", [
    "2023-1-1", "2023-01-1", "23-01-01", "2023-01-01 1:00:00", "2023-01-01 10:30", "2023-01-01T10:30:45Z",
    "2023-01-01 10:30:45.123", "2023-01-01T10:30:45+00:00", "2023/01/01", "20230101", "yesterday",
    "2023-02-30", "2023-13-01", "2023-01-01 24:00:00", "2023-01-01 10:60:00", "2023-01-01 10:00:60",
    "0000-01-01", " 2023-01-01", "2023-01-01 ", "2023-01-01  10:00:00", "٢٠٢٣-٠١-٠١", "1700000000",
])
@pytest.mark.parametrize("name", ["start_date", "end_date"])
def test_rejected_date_forms(raw, name):
    other = {"end_date": "9999-12-31"} if name == "start_date" else {"start_date": "0001-01-01"}
    msg = parse_error("event_metrics", **{name: raw}, **other)
    assert name in msg and "YYYY-MM-DD HH:MM:SS" in msg and "YYYY-MM-DDTHH:MM:SS" in msg


def test_default_window_is_last_7_days():
    q = parse("event_metrics")
    assert (q.end - q.start).days == 7
    assert abs((datetime_utcnow() - q.end).total_seconds()) < 5
    q = parse("event_metrics", end_date="2023-03-10 12:00:00")
    assert q.start == D(2023, 3, 3, 12) and q.end == D(2023, 3, 10, 12)
    q = parse("event_metrics", end_date="0001-01-02")  # end - 7 days would underflow
    assert q.start == D.min


def datetime_utcnow() -> D:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)


def test_start_after_end_is_400_equal_is_fine():
    msg = parse_error("event_metrics", start_date="2023-01-02", end_date="2023-01-01 23:59:59")
    assert "start_date" in msg and "end_date" in msg
    # start after end within the same hour still is start > end
    parse_error("event_metrics", start_date="2023-01-01 10:30:00", end_date="2023-01-01 10:10:00")
    q = parse("event_metrics", start_date="2023-01-01 10:30:00", end_date="2023-01-01 10:30:00")
    assert q.h_start == q.h_end == D(2023, 1, 1, 10)
    # only start_date given, in the future: end defaults to now -> 400
    parse_error("event_metrics", start_date="9999-01-01")


def test_empty_value_means_default():
    q = parse("session_metrics", start_date="", end_date="2023-01-08", time_bucket="", platform="")
    assert q.start == D(2023, 1, 1) and q.time_bucket == "day" and q.filters == {}


def test_last_value_of_a_repeated_scalar_wins():
    q = parse("session_metrics", end_date="2023-01-08", time_bucket=["hour", "week"])
    assert q.time_bucket == "week"


# ----------------------------------------------------------------------------- enums, limit, booleans


@pytest.mark.parametrize("pipe", ["session_metrics", "user_engagement_time_series", "active_users"])
@pytest.mark.parametrize("tb", ["hour", "day", "week", "month"])
def test_time_buckets(pipe, tb):
    assert parse(pipe, start_date="2023-01-01", end_date="2023-01-02", time_bucket=tb).time_bucket == tb


@pytest.mark.parametrize("tb", ["HOUR", "Day", "year", "minute", "1h", "days"])
def test_unknown_time_bucket(tb):
    msg = parse_error("user_engagement_time_series", time_bucket=tb)
    assert "time_bucket" in msg and "hour, day, week, month" in msg


def test_time_bucket_ignored_by_ranking_pipes():
    parse("event_metrics", time_bucket="fortnight")
    parse("geographic_distribution", time_bucket="fortnight")


@pytest.mark.parametrize("raw, value", [("1", 1), ("10000", 10000), ("007", 7), ("100", 100)])
@pytest.mark.parametrize("pipe", ["geographic_distribution", "event_metrics"])
def test_limit_accepted(pipe, raw, value):
    assert parse(pipe, limit=raw).limit == value


@pytest.mark.parametrize("raw", ["0", "10001", "-1", "+5", "1.5", "1e3", "abc", " 5", "5 ", "1_0", "٣",
                                 "99999999999999999999"])
@pytest.mark.parametrize("pipe", ["geographic_distribution", "event_metrics"])
def test_limit_rejected(pipe, raw):
    msg = parse_error(pipe, limit=raw)
    assert "limit" in msg and "1 to 10000" in msg


def test_limit_ignored_by_time_series():
    parse("session_metrics", limit="0")
    assert parse("event_metrics").limit == 100


@pytest.mark.parametrize("raw, value", [("true", True), ("false", False), ("1", True), ("0", False),
                                        ("TRUE", True), ("False", False)])
def test_segment_by_platform(raw, value):
    assert parse("active_users", segment_by_platform=raw).segment_by_platform is value
    assert parse("active_users").segment_by_platform is True


@pytest.mark.parametrize("raw", ["yes", "no", "2", "t", "on", "truee"])
def test_segment_by_platform_rejected(raw):
    msg = parse_error("active_users", segment_by_platform=raw)
    assert "segment_by_platform" in msg and "true, false, 1 or 0" in msg


@pytest.mark.parametrize("raw", ["country", "region", "city"])
def test_group_by(raw):
    assert parse("geographic_distribution", group_by=raw).group_by == raw
    assert parse("geographic_distribution").group_by == "region"


@pytest.mark.parametrize("raw", ["City", "continent", "country,region"])
def test_group_by_rejected(raw):
    msg = parse_error("geographic_distribution", group_by=raw)
    assert "group_by" in msg and "country, region, city" in msg


# ----------------------------------------------------------------------------- filters


def test_filters_split_and_exact():
    q = parse("user_engagement_time_series", platform="web,Web,ios", event_type="page_view")
    assert q.filters == {"platform": ["web", "Web", "ios"], "event_type": ["page_view"]}
    # an empty piece is the empty value (the empty platform is a platform like any other)
    assert parse("session_metrics", platform=",web").filters == {"platform": ["", "web"]}
    # repeated filters add up, duplicates removed
    assert parse("session_metrics", platform=["web", "ios,web"]).filters == {"platform": ["web", "ios"]}


def test_filters_a_pipe_does_not_have_are_ignored():
    assert parse("session_metrics", event_type="click").filters == {}
    assert parse("active_users", device="desktop").filters == {}
    assert parse("event_metrics", event_type="click").filters == {}
    assert PIPES["event_metrics"].filters_of(parse("event_metrics", country="US")) == {"country": ["US"]}


def test_unknown_params_ignored():
    parse("session_metrics", foo="bar", token="x", q="select 1")


# ----------------------------------------------------------------------------- buckets


def test_truncate():
    t = D(2025, 1, 1, 13, 45, 12)  # a Wednesday
    assert truncate("hour", t) == D(2025, 1, 1, 13)
    assert truncate("day", t) == D(2025, 1, 1)
    assert truncate("week", t) == D(2024, 12, 30)
    assert truncate("month", t) == D(2025, 1, 1)


@pytest.mark.parametrize("tb", ["hour", "day", "week", "month"])
def test_bucket_list_matches_count(tb):
    a, b = D(2024, 12, 29, 22), D(2025, 3, 2, 5)
    got = buckets(tb, a, b)
    assert len(got) == bucket_count(tb, a, b)
    assert got[0] == truncate(tb, a) and got[-1] == truncate(tb, b)
    assert got == sorted(set(got))


def test_bucket_limit_exactly_10000_ok_10001_not():
    start = D(2023, 1, 1)
    end_ok = D(2023, 1, 1) + (MAX_BUCKETS - 1) * (D(2023, 1, 1, 1) - D(2023, 1, 1))
    for pipe in ("session_metrics", "user_engagement_time_series", "active_users"):
        q = parse(pipe, start_date=format_datetime(start), end_date=format_datetime(end_ok), time_bucket="hour")
        assert bucket_count("hour", q.h_start, q.h_end) == MAX_BUCKETS
        end_bad = end_ok.replace(minute=59, second=59)  # same hour: still 10000
        parse(pipe, start_date=format_datetime(start), end_date=format_datetime(end_bad), time_bucket="hour")
        end_bad = end_ok + (D(2023, 1, 1, 1) - D(2023, 1, 1))
        msg = parse_error(pipe, start_date=format_datetime(start), end_date=format_datetime(end_bad),
                          time_bucket="hour")
        assert "10000" in msg and "time_bucket" in msg
    # the same window is fine for ranking pipes, and with larger buckets
    parse("event_metrics", start_date="0001-01-01", end_date="9999-12-31 23:59:59")
    parse("session_metrics", start_date="2000-01-01", end_date="2833-04-30 23:59:59", time_bucket="month")
    parse_error("session_metrics", start_date="2000-01-01", end_date="2833-05-01", time_bucket="month")
    parse_error("session_metrics", start_date="0001-01-01", end_date="9999-12-31", time_bucket="week")


def test_format_datetime_pads_year():
    assert format_datetime(D(1, 2, 3, 4, 5, 6)) == "0001-02-03 04:05:06"
    assert format_datetime(D(2023, 1, 1)) == "2023-01-01 00:00:00"


# ----------------------------------------------------------------------------- window split


def _hours(parts) -> list[D]:
    """Every hour covered by the parts (a daily part covers its 24 hours)."""
    out = []
    for p in parts:
        t = p.lo
        while t <= p.hi:
            if p.grain == "daily":
                out += [t.replace(hour=h) for h in range(24)]
                t = t.replace(hour=0) + (D(2000, 1, 2) - D(2000, 1, 1))
            else:
                out.append(t)
                t = t + (D(2000, 1, 1, 1) - D(2000, 1, 1))
    return out


@pytest.mark.parametrize("a, b", [
    (D(2023, 1, 1), D(2023, 12, 31, 23)),
    (D(2023, 1, 1, 5), D(2023, 1, 3, 4)),
    (D(2023, 1, 1, 5), D(2023, 1, 1, 7)),
    (D(2023, 1, 1, 1), D(2023, 1, 2, 23)),
    (D(2023, 1, 1), D(2023, 1, 1, 22)),
    (D(2023, 1, 1, 23), D(2023, 1, 2)),
    (D(2023, 1, 1, 3), D(2023, 1, 1, 3)),
    (D(2024, 2, 28, 13), D(2024, 3, 1, 23)),
])
def test_window_parts_cover_exactly_the_window(a, b):
    parts = window_parts(a, b)
    hours = _hours(parts)
    expected = [h for h in _hours([type(parts[0])("hourly", a, b)])]
    assert hours == expected  # no hour missing, none twice, in order
    assert all(p.lo.hour == 0 and p.hi.hour == 0 for p in parts if p.grain == "daily")
    assert window_parts(a, b, hourly_only=True) == [type(parts[0])("hourly", a, b)]


def test_window_parts_extremes_do_not_overflow():
    assert [p.grain for p in window_parts(D(1, 1, 1), D(9999, 12, 31, 23))] == ["daily"]
    assert [p.grain for p in window_parts(D(9999, 12, 31, 1), D(9999, 12, 31, 23))] == ["hourly"]
    assert [p.grain for p in window_parts(D(1, 1, 1), D(1, 1, 1, 22))] == ["hourly"]


# ----------------------------------------------------------------------------- declarations


def test_every_pipe_declared_once_with_contract_columns():
    assert list(PIPES) == ["session_metrics", "user_engagement_time_series", "active_users",
                           "geographic_distribution", "event_metrics"]
    cols = {name: [(c.name, c.type) for c in p.columns] for name, p in PIPES.items()}
    assert cols["session_metrics"] == [("time_bucket", "DateTime"), ("session_count", "UInt64"),
                                       ("avg_session_duration", "Nullable(Float64)"),
                                       ("bounce_rate", "Nullable(Float64)")]
    assert cols["user_engagement_time_series"] == [("time_bucket", "DateTime"), ("event_count", "UInt64"),
                                                   ("unique_users", "UInt64"), ("avg_duration", "Nullable(Float64)")]
    assert cols["active_users"] == [("time_bucket", "DateTime"), ("platform", "String"), ("active_users", "UInt64")]
    assert cols["geographic_distribution"] == [("country", "String"), ("region", "String"), ("city", "String"),
                                               ("event_count", "UInt64"), ("unique_users", "UInt64"),
                                               ("avg_duration", "Float64")]
    assert cols["event_metrics"] == [("event_type", "String"), ("event_count", "UInt64"),
                                     ("unique_users", "UInt64"), ("avg_duration", "Float64")]
    assert PIPES["session_metrics"].filters == ("platform", "device", "country")
    assert PIPES["user_engagement_time_series"].filters == ("event_type", "platform", "device", "country")
    assert PIPES["active_users"].filters == ("event_type", "country", "platform")
    assert PIPES["geographic_distribution"].filters == ("event_type", "platform", "device", "country")
    assert PIPES["event_metrics"].filters == ("platform", "device", "country")


def test_columns_depend_on_parameters():
    au = PIPES["active_users"]
    assert [c.name for c in au.columns_for(parse("active_users", segment_by_platform="0"))] == \
        ["time_bucket", "active_users"]
    geo = PIPES["geographic_distribution"]
    for g, keys in (("country", ["country"]), ("region", ["country", "region"]),
                    ("city", ["country", "region", "city"])):
        assert [c.name for c in geo.columns_for(parse("geographic_distribution", group_by=g))] == \
            keys + ["event_count", "unique_users", "avg_duration"]
