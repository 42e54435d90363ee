"""The pipes, each declared ONCE: name, description, filters, extra parameters, output columns and
the function that answers it from the published marts.

These declarations drive everything else: the routes (``serving/routers/pipes.py`` registers
``GET /v0/pipes/<name>.{format}`` per pipe), parameter validation (:meth:`Pipe.parse`), the OpenAPI
documents (``serving/openapi.py``) and docs/API.md (checked by tests against these declarations).

Every answer reads the window through :func:`serving.query.source_sql` (daily marts for whole
days, hourly marts for the edges, ``UNION ALL``), sums additive measures, counts distinct
``user_key`` exactly over the union, and computes averages as ``sum(duration_sum) / sum(count)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import duckdb

from serving.formats import Column, Result
from serving.params import (
    END_DATE,
    FILTER_PARAMS,
    GROUP_BY,
    GROUP_BY_PARAM,
    LIMIT,
    SEGMENT_BY_PLATFORM,
    START_DATE,
    TIME_BUCKET,
    Param,
    PipeQuery,
    buckets,
    parse_pipe_query,
)
from serving import fastpath
from serving.query import distinct_users_sql, source_sql

Cursor = duckdb.DuckDBPyConnection

# Approximate bytes per value of a mart column, for statistics.bytes_read.
_WIDTH = {"period_start": 8, "user_key": 8, "event_count": 8, "duration_sum": 8, "session_count": 8,
          "bounced_sessions": 8}
_STRING_WIDTH = 16


@dataclass(frozen=True)
class Pipe:
    name: str
    description: str
    marts: str  # mart family read: <marts>_hourly / <marts>_daily
    filters: tuple[str, ...]
    extra_params: tuple[Param, ...]
    columns: tuple[Column, ...]
    answer: Callable[[Cursor, PipeQuery, "Pipe"], Result] = field(repr=False)
    time_series: bool
    # Which declared columns a request returns (default: all).
    select_columns: Callable[[PipeQuery], Sequence[str]] | None = field(default=None, repr=False)
    # Query string of the documented example (docs/API.md's curl line; the Tinybird project's own).
    example: str = ""

    @property
    def params(self) -> tuple[Param, ...]:
        common = (START_DATE, END_DATE) + ((TIME_BUCKET,) if self.time_series else ())
        return common + tuple(FILTER_PARAMS[f] for f in self.filters) + self.extra_params

    def parse(self, query: Mapping[str, list[str]]) -> PipeQuery:
        """Validate query-string values (name -> all given values); ApiError(400) when bad."""
        return parse_pipe_query(self.name, self.params, query, self.time_series)

    def columns_for(self, q: PipeQuery) -> tuple[Column, ...]:
        if self.select_columns is None:
            return self.columns
        wanted = set(self.select_columns(q))
        return tuple(c for c in self.columns if c.name in wanted)

    def run(self, cur: Cursor, q: PipeQuery) -> Result:
        return self.answer(cur, q, self)

    def filters_of(self, q: PipeQuery) -> dict[str, list[str]]:
        """The given filters this pipe has (others are ignored), in declaration order."""
        return {f: q.filters[f] for f in self.filters if q.filters.get(f)}


# ----------------------------------------------------------------------------- shared helpers


def _read(cur: Cursor, pipe: Pipe, q: PipeQuery, source_columns: Sequence[str], select: str,
          group_by: str, *, prefix_params: Sequence[Any] = (), hourly_only: bool = False) -> list[tuple]:
    """``SELECT <select> FROM (<window of the pipe's marts>) GROUP BY <group_by>``."""
    src, params = source_sql(pipe.marts, source_columns, q.h_start, q.h_end, pipe.filters_of(q), hourly_only)
    sql = f"SELECT {select} FROM ({src}) AS w GROUP BY {group_by}"
    return cur.execute(sql, [*prefix_params, *params]).fetchall()


def _read_users(cur: Cursor, pipe: Pipe, q: PipeQuery, source_columns: Sequence[str], groups: Sequence[str],
                sums: Sequence[str] = (), *, prefix_params: Sequence[Any] = (), outer: str = "", tail: str = "",
                tail_params: Sequence[Any] = (), hourly_only: bool = False,
                source: tuple[str, list[Any]] | None = None) -> list[tuple]:
    """Per group of the window's rows: ``(*groups, distinct users, *sums, rows read[, *outer])``
    (``query.distinct_users_sql``). ``source``: the window's rows (SQL, bound values) if not the
    pipe's marts (``source_sql``)."""
    src, params = source or source_sql(pipe.marts, source_columns, q.h_start, q.h_end, pipe.filters_of(q),
                                       hourly_only)
    sql = distinct_users_sql(src, groups, sums, outer, tail)
    return cur.execute(sql, [*prefix_params, *params, *tail_params]).fetchall()


def _bytes(source_columns: Sequence[str], rows_read: int) -> int:
    return rows_read * sum(_WIDTH.get(c, _STRING_WIDTH) for c in source_columns)


def _avg(total: int | None, count: int | None) -> float | None:
    return total / count if count else None


def _bucket_expr() -> str:
    return "date_trunc(?, period_start)"  # the time bucket name is bound


# ----------------------------------------------------------------------------- answers


def _session_metrics(cur: Cursor, q: PipeQuery, pipe: Pipe) -> Result:
    cols = ("period_start", "session_count", "bounced_sessions", "duration_sum")
    got = _read(
        cur, pipe, q, cols,
        f"{_bucket_expr()} AS b, sum(session_count), sum(bounced_sessions), sum(duration_sum), count(*)", "b",
        prefix_params=[q.time_bucket], hourly_only=q.time_bucket == "hour",
    )
    by_bucket = {r[0]: r for r in got}
    rows = []
    for b in buckets(q.time_bucket, q.h_start, q.h_end):
        r = by_bucket.get(b)
        sessions = int(r[1]) if r else 0
        rows.append((b, sessions, _avg(r[3], sessions) if r else None, _avg(r[2], sessions) if r else None))
    n = sum(r[4] for r in got)
    return Result(pipe.columns_for(q), rows, len(rows), n, _bytes(cols, n))


def _user_engagement_time_series(cur: Cursor, q: PipeQuery, pipe: Pipe) -> Result:
    cols = ("period_start", "user_key", "event_count", "duration_sum")
    got = _read_users(cur, pipe, q, cols, [f"{_bucket_expr()} AS b"], ["event_count", "duration_sum"],
                      prefix_params=[q.time_bucket], hourly_only=q.time_bucket == "hour")
    by_bucket = {r[0]: r for r in got}  # b, users, events, duration, rows
    rows = []
    for b in buckets(q.time_bucket, q.h_start, q.h_end):
        r = by_bucket.get(b)
        rows.append((b, int(r[2]), r[1], _avg(r[3], r[2])) if r else (b, 0, 0, None))
    n = sum(int(r[4]) for r in got)
    return Result(pipe.columns_for(q), rows, len(rows), n, _bytes(cols, n))


def _active_users(cur: Cursor, q: PipeQuery, pipe: Pipe) -> Result:
    hourly = q.time_bucket == "hour"
    bucket_list = buckets(q.time_bucket, q.h_start, q.h_end)
    cols = ("period_start", "user_key", "platform") if q.segment_by_platform else ("period_start", "user_key")
    groups = [f"{_bucket_expr()} AS b", "platform"] if q.segment_by_platform else [f"{_bucket_expr()} AS b"]
    # Whole days from the event-type masks when the snapshot has them (fastpath.masked_window_sql).
    source = None if hourly else fastpath.masked_window_sql(cur, pipe.marts, cols, q.h_start, q.h_end, pipe.filters_of(q))
    try:
        got = _read_users(cur, pipe, q, cols, groups, prefix_params=[q.time_bucket], hourly_only=hourly,
                          source=source)
    except (duckdb.CatalogException, duckdb.BinderException):
        if source is None:
            raise
        got = _read_users(cur, pipe, q, cols, groups, prefix_params=[q.time_bucket], hourly_only=hourly)
    if q.segment_by_platform:
        counts = {(r[0], r[1]): r[2] for r in got}
        platforms = sorted({r[1] for r in got})  # Python str order = code-point order
        rows = [(b, p, counts.get((b, p), 0)) for b in bucket_list for p in platforms]
    else:
        counts = {r[0]: r[1] for r in got}
        rows = [(b, counts.get(b, 0)) for b in bucket_list]
    n = sum(int(r[-1]) for r in got)
    return Result(pipe.columns_for(q), rows, len(rows), n, _bytes(cols, n))


def _ranking(cur: Cursor, q: PipeQuery, pipe: Pipe, keys: Sequence[str]) -> Result:
    """Rows per key: event_count desc, then keys asc (binary = code-point order), cut at limit."""
    cols = ("period_start", "user_key", *keys, "event_count", "duration_sum")
    key_list = ", ".join(keys)
    got = _read_users(
        cur, pipe, q, cols, keys, ["event_count", "duration_sum"],
        outer=", count(*) OVER () AS groups, sum(sum(n)) OVER () AS source_rows",
        tail=f" ORDER BY event_count DESC, {key_list} LIMIT ?", tail_params=[q.limit],
    )
    k = len(keys)  # *keys, users, events, duration, rows, groups, source rows
    rows = [(*r[:k], int(r[k + 1]), r[k], _avg(r[k + 2], r[k + 1])) for r in got]
    total = got[0][k + 4] if got else 0
    n = int(got[0][k + 5]) if got else 0
    return Result(pipe.columns_for(q), rows, total, n, _bytes(cols, n))


def _place_keys(q: PipeQuery) -> tuple[str, ...]:
    """geographic_distribution's ranking keys: the places at the requested group_by level."""
    return GROUP_BY[q.group_by]


def _event_type_key(q: PipeQuery) -> tuple[str, ...]:
    return ("event_type",)


def _geographic_distribution(cur: Cursor, q: PipeQuery, pipe: Pipe) -> Result:
    return _ranking(cur, q, pipe, _place_keys(q))


def _event_metrics(cur: Cursor, q: PipeQuery, pipe: Pipe) -> Result:
    return _ranking(cur, q, pipe, _event_type_key(q))


# ----------------------------------------------------------------------------- declarations

_TIME_BUCKET_COL = Column("time_bucket", "DateTime", "Start of the bucket (UTC), 'YYYY-MM-DD HH:MM:SS'.")
_EVENT_COUNT = Column("event_count", "UInt64", "Events.")
_UNIQUE_USERS = Column("unique_users", "UInt64", "Exact number of distinct user_id.")

PIPES: dict[str, Pipe] = {p.name: p for p in (
    Pipe(
        name="session_metrics",
        description="Session count, average session duration and bounce rate per time bucket. A session is "
        "all events sharing a session_id; it belongs to the bucket of its first event, whose platform, "
        "device and country are the session's; it bounced iff it has exactly one event.",
        marts="session_metrics",
        filters=("platform", "device", "country"),
        extra_params=(),
        time_series=True,
        columns=(
            _TIME_BUCKET_COL,
            Column("session_count", "UInt64", "Sessions that started in the bucket."),
            Column("avg_session_duration", "Nullable(Float64)",
                   "Average of the sessions' summed event durations, seconds (null without sessions)."),
            Column("bounce_rate", "Nullable(Float64)",
                   "Share of single-event sessions, in [0, 1] (null without sessions)."),
        ),
        answer=fastpath.sessions(_session_metrics),
        example="start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&time_bucket=day&platform=web",
    ),
    Pipe(
        name="user_engagement_time_series",
        description="Event count, exact unique users and average event duration per time bucket.",
        marts="user_engagement",
        filters=("event_type", "platform", "device", "country"),
        extra_params=(),
        time_series=True,
        columns=(
            _TIME_BUCKET_COL,
            _EVENT_COUNT,
            _UNIQUE_USERS,
            Column("avg_duration", "Nullable(Float64)", "Average event duration, seconds (null without events)."),
        ),
        answer=fastpath.engagement(_user_engagement_time_series),
        example="start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&time_bucket=hour&event_type=page_view",
    ),
    Pipe(
        name="active_users",
        description="Exact active (distinct) users per time bucket, by default one row per bucket and "
        "platform, for every platform with an event in the window after the filters.",
        marts="active_users",
        filters=("event_type", "country", "platform"),
        extra_params=(SEGMENT_BY_PLATFORM,),
        time_series=True,
        columns=(
            _TIME_BUCKET_COL,
            Column("platform", "String", "Platform.", when="segment_by_platform=true"),
            Column("active_users", "UInt64", "Exact number of distinct user_id."),
        ),
        answer=fastpath.active_users(_active_users),
        example="start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&time_bucket=hour",
        select_columns=lambda q: ("time_bucket", "active_users") + (("platform",) if q.segment_by_platform else ()),
    ),
    Pipe(
        name="geographic_distribution",
        description="Event count, exact unique users and average event duration per country, region or city, "
        "by event_count descending then the key ascending, cut at limit.",
        marts="geographic_distribution",
        filters=("event_type", "platform", "device", "country"),
        extra_params=(GROUP_BY_PARAM, LIMIT),
        time_series=False,
        columns=(
            Column("country", "String", "Country."),
            Column("region", "String", "Region.", when="group_by=region or city"),
            Column("city", "String", "City.", when="group_by=city"),
            _EVENT_COUNT,
            _UNIQUE_USERS,
            Column("avg_duration", "Float64", "Average event duration, seconds."),
        ),
        answer=fastpath.ranking(fastpath.masked_ranking(_geographic_distribution, _place_keys), _place_keys),
        example="start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59&event_type=page_view",
        select_columns=lambda q: (*_place_keys(q), "event_count", "unique_users", "avg_duration"),
    ),
    Pipe(
        name="event_metrics",
        description="Event count, exact unique users and average duration per event type, by event_count "
        "descending then event_type ascending, cut at limit.",
        marts="user_engagement",
        filters=("platform", "device", "country"),
        extra_params=(LIMIT,),
        time_series=False,
        columns=(
            Column("event_type", "String", "Event type."),
            _EVENT_COUNT,
            _UNIQUE_USERS,
            Column("avg_duration", "Float64", "Average event duration, seconds."),
        ),
        answer=fastpath.ranking(fastpath.masked_ranking(_event_metrics, _event_type_key), _event_type_key),
        example="start_date=2023-01-01%2000:00:00&end_date=2023-12-31%2023:59:59",
    ),
)}


def get_pipe(name: str) -> Pipe | None:
    return PIPES.get(name)


__all__ = ["PIPES", "Pipe", "PipeQuery", "get_pipe"]
