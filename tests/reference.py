"""Test oracle: a literal transcription of the contract's reference semantics.

``reference_answer(con, q)`` answers a pipe query with plain DuckDB SQL over the
raw ``user_events`` table (CONTRACT.md, section 2, "Reference semantics").  Other
tests compare the real system against it, so it is deliberately simple and slow
rather than clever:

* window: whole hours, ``H_start = date_trunc('hour', start)``,
  ``H_end = date_trunc('hour', end)``; an event counts iff
  ``H_start <= date_trunc('hour', timestamp) <= H_end``;
* time-series pipes (session_metrics, user_engagement_time_series, active_users)
  are gap-filled with every bucket ``date_trunc(tb, h)`` for h in the hours of the
  window (counts 0, averages/rates ``None``);
* distinct counts are exact ``count(DISTINCT user_id)`` per output row;
* sessions are built over ALL rows of the table, then windowed/bucketed on their
  start; first-event attributes come from ``min({'ts', 'platform', 'device',
  'country'})`` (ties -> smallest (platform, device, country));
* strings compare/sort by code point: every string column is re-collated with
  ``COLLATE "binary"`` so a connection-level ``default_collation`` cannot leak in;
* every value (dates, bucket, filters, limit) is a bound parameter; the table name
  is the only identifier and it is quoted.

Rows come back as dicts with the contract's column names, in contract order:
``time_bucket`` is a naive UTC ``datetime``, counts are ``int``, averages/rates are
``float`` or ``None``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import duckdb

PIPES: tuple[str, ...] = (
    "session_metrics",
    "user_engagement_time_series",
    "active_users",
    "geographic_distribution",
    "event_metrics",
)

# The filters each pipe has; any other filter given in a PipeQuery is ignored.
PIPE_FILTERS: dict[str, tuple[str, ...]] = {
    "session_metrics": ("platform", "device", "country"),
    "user_engagement_time_series": ("event_type", "platform", "device", "country"),
    "active_users": ("event_type", "country", "platform"),
    "geographic_distribution": ("event_type", "platform", "device", "country"),
    "event_metrics": ("platform", "device", "country"),
}

TIME_SERIES_PIPES: frozenset[str] = frozenset(
    {"session_metrics", "user_engagement_time_series", "active_users"}
)
RANKING_PIPES: frozenset[str] = frozenset({"geographic_distribution", "event_metrics"})

TIME_BUCKETS: tuple[str, ...] = ("hour", "day", "week", "month")
GROUP_BY_KEYS: dict[str, tuple[str, ...]] = {
    "country": ("country",),
    "region": ("country", "region"),
    "city": ("country", "region", "city"),
}
FILTER_NAMES: tuple[str, ...] = ("platform", "device", "country", "event_type")
LIMIT_MIN, LIMIT_MAX = 1, 10_000


@dataclass
class PipeQuery:
    pipe: str
    start: _dt.datetime
    end: _dt.datetime
    time_bucket: str = "day"
    # filter name -> accepted values ("any of them"); an empty list means no filter
    filters: dict[str, list[str]] = field(default_factory=dict)
    limit: int = 100
    group_by: str = "region"
    segment_by_platform: bool = True


# --------------------------------------------------------------------------- helpers


def _utc_naive(value: Any, name: str) -> _dt.datetime:
    """A naive UTC datetime (aware values are converted to UTC, dates mean 00:00:00)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day)
    raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")


def _quote_table(table: str) -> str:
    parts = table.split(".")
    if not table or any(p == "" for p in parts):
        raise ValueError(f"bad table name {table!r}")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _validate(q: PipeQuery) -> tuple[_dt.datetime, _dt.datetime]:
    if q.pipe not in PIPE_FILTERS:
        raise ValueError(f"unknown pipe {q.pipe!r}; expected one of {PIPES}")
    if q.time_bucket not in TIME_BUCKETS:
        raise ValueError(f"unknown time_bucket {q.time_bucket!r}; expected one of {TIME_BUCKETS}")
    if q.group_by not in GROUP_BY_KEYS:
        raise ValueError(f"unknown group_by {q.group_by!r}; expected one of {tuple(GROUP_BY_KEYS)}")
    if isinstance(q.limit, bool) or not isinstance(q.limit, int) or not LIMIT_MIN <= q.limit <= LIMIT_MAX:
        raise ValueError(f"limit must be an int in {LIMIT_MIN}..{LIMIT_MAX}, got {q.limit!r}")
    if not isinstance(q.segment_by_platform, bool):
        raise ValueError(f"segment_by_platform must be a bool, got {q.segment_by_platform!r}")
    for key, values in (q.filters or {}).items():
        if key not in FILTER_NAMES:
            raise ValueError(f"unknown filter {key!r}; expected one of {FILTER_NAMES}")
        vals = [values] if isinstance(values, str) else list(values)
        if not all(isinstance(v, str) for v in vals):
            raise ValueError(f"filter {key!r} values must be strings, got {values!r}")
    start = _utc_naive(q.start, "start")
    end = _utc_naive(q.end, "end")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    return start, end


def _active_filters(q: PipeQuery) -> list[tuple[str, list[str]]]:
    """(filter, values) for the filters this pipe has and that were given, in a fixed order."""
    out = []
    for key in PIPE_FILTERS[q.pipe]:
        values = (q.filters or {}).get(key)
        if values is None:
            continue
        vals = [values] if isinstance(values, str) else list(values)
        if vals:  # an empty list means "no filter"
            out.append((key, vals))
    return out


def _filter_sql(q: PipeQuery, params: dict[str, Any], column_prefix: str = "") -> str:
    """`AND list_contains($f_<key>, <col>)` for every active filter (values are bound)."""
    clauses = []
    for key, vals in _active_filters(q):
        params[f"f_{key}"] = vals
        clauses.append(f" AND list_contains($f_{key}, {column_prefix}{key})")
    return "".join(clauses)


def _common_ctes(table: str) -> str:
    """`base` (the raw table, code-point collated), `w` (the window), `buckets` (gap fill)."""
    return f"""
base AS (
    SELECT CAST("timestamp" AS TIMESTAMP)     AS ts,
           user_id    COLLATE "binary"        AS user_id,
           event_type COLLATE "binary"        AS event_type,
           session_id COLLATE "binary"        AS session_id,
           duration,
           device     COLLATE "binary"        AS device,
           platform   COLLATE "binary"        AS platform,
           page       COLLATE "binary"        AS page,
           country    COLLATE "binary"        AS country,
           region     COLLATE "binary"        AS region,
           city       COLLATE "binary"        AS city
    FROM {_quote_table(table)}
),
w AS (
    SELECT date_trunc('hour', CAST($start_date AS TIMESTAMP)) AS h_start,
           date_trunc('hour', CAST($end_date AS TIMESTAMP))   AS h_end
),
buckets AS (
    SELECT DISTINCT CAST(date_trunc($tb, g.h) AS TIMESTAMP) AS time_bucket
    FROM w, generate_series(w.h_start, w.h_end, INTERVAL 1 HOUR) AS g(h)
)"""


def _window_events(q: PipeQuery, params: dict[str, Any]) -> str:
    """CTE `e`: the events inside the window, after this pipe's filters."""
    return f""",
e AS (
    SELECT base.* FROM base, w
    WHERE date_trunc('hour', base.ts) BETWEEN w.h_start AND w.h_end{_filter_sql(q, params, 'base.')}
)"""


# --------------------------------------------------------------------------- per pipe SQL


def _sql_session_metrics(q: PipeQuery, table: str, params: dict[str, Any]) -> str:
    return f"""
WITH {_common_ctes(table)},
s AS (
    SELECT session_id,
           min(ts) AS session_start,
           min({{'ts': ts, 'platform': platform, 'device': device, 'country': country}}) AS first_event,
           count(*) AS events,
           sum(duration) AS session_duration
    FROM base
    GROUP BY session_id
),
sf AS (
    SELECT session_start, events, session_duration,
           first_event.platform AS platform,
           first_event.device   AS device,
           first_event.country  AS country
    FROM s
),
sw AS (
    SELECT CAST(date_trunc($tb, sf.session_start) AS TIMESTAMP) AS time_bucket,
           sf.events, sf.session_duration
    FROM sf, w
    WHERE date_trunc('hour', sf.session_start) BETWEEN w.h_start AND w.h_end{_filter_sql(q, params, 'sf.')}
)
SELECT b.time_bucket,
       count(sw.events) AS session_count,
       CAST(avg(sw.session_duration) AS DOUBLE) AS avg_session_duration,
       CAST(avg(CASE WHEN sw.events = 1 THEN 1.0
                     WHEN sw.events IS NOT NULL THEN 0.0 END) AS DOUBLE) AS bounce_rate
FROM buckets b LEFT JOIN sw ON sw.time_bucket = b.time_bucket
GROUP BY b.time_bucket
ORDER BY b.time_bucket
"""


def _sql_user_engagement_time_series(q: PipeQuery, table: str, params: dict[str, Any]) -> str:
    return f"""
WITH {_common_ctes(table)}{_window_events(q, params)}
SELECT b.time_bucket,
       count(e.user_id) AS event_count,
       count(DISTINCT e.user_id) AS unique_users,
       CAST(avg(e.duration) AS DOUBLE) AS avg_duration
FROM buckets b LEFT JOIN e ON CAST(date_trunc($tb, e.ts) AS TIMESTAMP) = b.time_bucket
GROUP BY b.time_bucket
ORDER BY b.time_bucket
"""


def _sql_active_users(q: PipeQuery, table: str, params: dict[str, Any]) -> str:
    if q.segment_by_platform:
        return f"""
WITH {_common_ctes(table)}{_window_events(q, params)},
platforms AS (SELECT DISTINCT platform FROM e),
agg AS (
    SELECT CAST(date_trunc($tb, ts) AS TIMESTAMP) AS time_bucket, platform,
           count(DISTINCT user_id) AS active_users
    FROM e GROUP BY 1, 2
)
SELECT b.time_bucket, p.platform, coalesce(a.active_users, 0) AS active_users
FROM buckets b
CROSS JOIN platforms p
LEFT JOIN agg a ON a.time_bucket = b.time_bucket AND a.platform = p.platform
ORDER BY b.time_bucket, p.platform
"""
    return f"""
WITH {_common_ctes(table)}{_window_events(q, params)}
SELECT b.time_bucket, count(DISTINCT e.user_id) AS active_users
FROM buckets b LEFT JOIN e ON CAST(date_trunc($tb, e.ts) AS TIMESTAMP) = b.time_bucket
GROUP BY b.time_bucket
ORDER BY b.time_bucket
"""


def _sql_geographic_distribution(q: PipeQuery, table: str, params: dict[str, Any]) -> str:
    keys = ", ".join(GROUP_BY_KEYS[q.group_by])
    return f"""
WITH {_common_ctes(table)}{_window_events(q, params)}
SELECT {keys},
       count(*) AS event_count,
       count(DISTINCT user_id) AS unique_users,
       CAST(avg(duration) AS DOUBLE) AS avg_duration
FROM e
GROUP BY {keys}
ORDER BY event_count DESC, {keys}
"""


def _sql_event_metrics(q: PipeQuery, table: str, params: dict[str, Any]) -> str:
    return f"""
WITH {_common_ctes(table)}{_window_events(q, params)}
SELECT event_type,
       count(*) AS event_count,
       count(DISTINCT user_id) AS unique_users,
       CAST(avg(duration) AS DOUBLE) AS avg_duration
FROM e
GROUP BY event_type
ORDER BY event_count DESC, event_type
"""


_BUILDERS = {
    "session_metrics": _sql_session_metrics,
    "user_engagement_time_series": _sql_user_engagement_time_series,
    "active_users": _sql_active_users,
    "geographic_distribution": _sql_geographic_distribution,
    "event_metrics": _sql_event_metrics,
}


def reference_sql(q: PipeQuery, table: str = "user_events", *, apply_limit: bool = True) -> tuple[str, dict[str, Any]]:
    """The reference SQL for `q` and its bound parameters (exposed for debugging)."""
    start, end = _validate(q)
    params: dict[str, Any] = {"start_date": start, "end_date": end, "tb": q.time_bucket}
    sql = _BUILDERS[q.pipe](q, table, params)
    if apply_limit and q.pipe in RANKING_PIPES:
        params["lim"] = q.limit
        sql += "LIMIT $lim\n"
    return sql, params


def _run(con: duckdb.DuckDBPyConnection, q: PipeQuery, table: str, apply_limit: bool) -> list[dict]:
    sql, params = reference_sql(q, table, apply_limit=apply_limit)
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


# --------------------------------------------------------------------------- public API


def reference_answer(con: duckdb.DuckDBPyConnection, q: PipeQuery, table: str = "user_events") -> list[dict]:
    """The contract's answer to `q` over the raw events in `table` (rows as ordered dicts)."""
    return _run(con, q, table, apply_limit=True)


def reference_rows_before_limit(con: duckdb.DuckDBPyConnection, q: PipeQuery, table: str = "user_events") -> int:
    """Rows before `limit` is applied (ranking pipes); for time-series pipes, the row count."""
    return len(_run(con, q, table, apply_limit=False))


__all__ = [
    "PIPES",
    "PIPE_FILTERS",
    "TIME_SERIES_PIPES",
    "RANKING_PIPES",
    "TIME_BUCKETS",
    "GROUP_BY_KEYS",
    "PipeQuery",
    "reference_answer",
    "reference_rows_before_limit",
    "reference_sql",
]
