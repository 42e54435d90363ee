"""Fast, still exact, answers of the time-series pipes from the bucket cubes (docs/ARCHITECTURE.md,
"Bucket cubes"), and of the ranking pipes from the cubes, user spans and event-type masks.

``engagement_cube`` and ``activity_cube`` (dbt_project/macros/cube.sql) hold, per WHOLE calendar
bucket (hour, day, ISO week, month), the exact distinct users (and, for engagement, event and
duration sums) with no filter or one single-valued filter (activity: also per platform);
``session_cube`` the session sums of session_metrics the same way. A request
whose filters fit those rows is answered as:

* buckets that lie entirely inside the window: one cube row each (from the snapshot's in-memory copy
  of the cube, serving/cubes.py: a binary search);
* the partial first/last bucket (a window that starts or ends inside a bucket): the general path
  (serving/pipes.py over the hourly/daily marts), restricted to that part of the window.

A bucket whose hours outside the window hold no data (a window from before the first event or to
"now") counts as whole: its cube row is exactly the window's part of it.

The ranking pipes first cut a window that reaches past the data at the days holding data
(``within_data``). Over exactly one calendar day, ISO week or month without filters they read the
cube rows of that bucket (``engagement_cube`` for event_metrics, ``geo_cube`` for the places); over
other windows of whole days, the user spans (``ranking`` below): counted in memory
(``SpanCounts``) when the window starts on the data's first day or ends on its last, read in DuckDB
when it covers most of the data. Both over the other windows with a whole day, whatever the
filters: the event-type masks (``masked_ranking`` below).

Distinct counts are never added across buckets or parts: each output bucket is either one cube row
(the distinct count of exactly that bucket) or computed whole by the general path. Anything else
(several filters, several values of one filter, a snapshot published before the cubes existed)
takes the general path unchanged.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any, Callable

import duckdb
import numpy as np

from serving.cubes import (ACTIVITY, ENGAGEMENT, EVENT_DAY_SUMS, GEO, GEO_DAY_SUMS, SESSIONS, CubeSpec, cube_index,
                           day_sums, object_column)
from serving.formats import Result
from serving.params import PipeQuery, buckets, truncate
from serving.query import Part, distinct_users_sql, part_where, source_sql, window_parts
from serving.snapshots import snapshot_fact

HOUR = timedelta(hours=1)
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
_CUBE_ROW_BYTES = 48


def bucket_end(tb: str, b: datetime) -> datetime | None:
    """The last hour of bucket ``b`` (None past datetime's range)."""
    try:
        if tb == "month":
            nxt = b.replace(year=b.year + 1, month=1) if b.month == 12 else b.replace(month=b.month + 1)
        else:
            nxt = b + _STEP[tb]
        return nxt - HOUR
    except (OverflowError, ValueError):
        return None


def split_window(tb: str, h_start: datetime, h_end: datetime, data_hours: tuple[datetime, datetime] | None = None
                 ) -> tuple[list[datetime], list[tuple[datetime, datetime]]]:
    """(labels of the buckets wholly inside the window, [(first hour, last hour)] of the partial
    parts). Together they cover the hours h_start..h_end exactly once.

    ``data_hours``: (first, last) hour with data in the snapshot. A bucket is then also whole when
    its hours outside the window hold no data: its cube row is exactly the window's part of it (a
    window from before the first event, or to "now", takes the cube for its edge buckets)."""
    whole, parts = [], []
    for b in buckets(tb, h_start, h_end):
        last = bucket_end(tb, b)
        lo, hi = b, last
        if data_hours is not None and last is not None:
            lo, hi = max(b, data_hours[0]), min(last, data_hours[1])
        if last is not None and (lo > hi or (lo >= h_start and hi <= h_end)):
            whole.append(b)
        else:
            parts.append((max(b, h_start), h_end if last is None else min(last, h_end)))
    return whole, parts


def _sub(q: PipeQuery, lo: datetime, hi: datetime) -> PipeQuery:
    return dataclasses.replace(q, start=lo, end=hi)


def _single(values: list[str] | None) -> str | None:
    return values[0] if values and len(values) == 1 else None


def _one_filter(filters: dict[str, list[str]], allowed: tuple[str, ...]) -> tuple[str, str] | None:
    """('', '') without filters, (dim, value) for one single-valued filter, else None."""
    given = {k: v for k, v in filters.items() if k in allowed}
    if len(given) != len(filters) or len(given) > 1:
        return None
    if not given:
        return "", ""
    (dim, values), = given.items()
    value = _single(values)
    return None if value is None else (dim, value)


def _rows_if_present(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple] | None:
    """The rows of `sql`, or None when the snapshot lacks the marts or columns it reads."""
    try:
        return cur.execute(sql, params).fetchall()
    except (duckdb.CatalogException, duckdb.BinderException):  # a snapshot published before the
        return None  # mart existed, or had these columns (the general path answers it)


def _time_series(general: Callable, spec: CubeSpec, output_row: Callable[[tuple], tuple],
                 empty_row: Callable[[datetime], tuple]) -> Callable:
    """A time-series pipe answered from ``spec``'s cube (selector grain, filter_dim, filter_value)
    for whole buckets, ``general`` for the partial ones. ``output_row``: a cube row
    (period_start, *measures) as the pipe's row; ``empty_row``: the row of a bucket without data."""

    def answer(cur, q: PipeQuery, pipe) -> Result:
        f = _one_filter(pipe.filters_of(q), pipe.filters)
        if f is None:
            return general(cur, q, pipe)
        cube = cube_index(cur, spec)
        if cube is None:
            return general(cur, q, pipe)
        whole, parts = split_window(q.time_bucket, q.h_start, q.h_end, cube.first_and_last(("hour", "", "")))
        if not whole:
            return general(cur, q, pipe)
        got = cube.rows((q.time_bucket, f[0], f[1]), whole[0], whole[-1])
        by_bucket: dict[datetime, tuple] = {r[0]: output_row(r) for r in got}
        n, nbytes = len(got), len(got) * _CUBE_ROW_BYTES
        for lo, hi in parts:
            res = general(cur, _sub(q, lo, hi), pipe)
            n, nbytes = n + res.rows_read, nbytes + res.bytes_read
            for row in res.rows:
                by_bucket[row[0]] = row
        rows = [by_bucket.get(b) or empty_row(b) for b in buckets(q.time_bucket, q.h_start, q.h_end)]
        return Result(pipe.columns_for(q), rows, len(rows), n, nbytes)

    return answer


def engagement(general: Callable) -> Callable:
    """user_engagement_time_series: ``engagement_cube`` for whole buckets, ``general`` for the partial ones."""
    return _time_series(general, ENGAGEMENT,
                        lambda r: (r[0], int(r[1]), int(r[2]), _avg(r[3], r[1])),  # events, users, duration
                        lambda b: (b, 0, 0, None))


def sessions(general: Callable) -> Callable:
    """session_metrics: ``session_cube`` for whole buckets, ``general`` for the partial ones. Not for
    distinct counts (sessions add up) but for size: a whole bucket is one row however many sessions
    and platform × device × country combinations it holds."""
    return _time_series(general, SESSIONS,  # sessions, bounced, duration -> sessions, avg duration, bounce rate
                        lambda r: (r[0], int(r[1]), _avg(r[3], r[1]), _avg(r[2], r[1])),
                        lambda b: (b, 0, None, None))


def active_users(general: Callable) -> Callable:
    """active_users: cube for whole buckets (per platform or all platforms), ``general`` for the rest."""

    def answer(cur, q: PipeQuery, pipe) -> Result:
        filters = dict(pipe.filters_of(q))
        platforms = filters.pop("platform", None)
        f = _one_filter(filters, ("event_type", "country"))
        if f is None or (platforms and not q.segment_by_platform and _single(platforms) is None):
            return general(cur, q, pipe)
        cube = cube_index(cur, ACTIVITY)
        if cube is None:
            return general(cur, q, pipe)
        whole, parts = split_window(q.time_bucket, q.h_start, q.h_end, cube.first_and_last(("hour", "", "", None)))
        if not whole:
            return general(cur, q, pipe)
        selector = (q.time_bucket, f[0], f[1])
        if q.segment_by_platform:  # the per-platform rows (platform NULL: all platforms together)
            got = [(r[0], key[3], r[1]) for key in cube.selectors()
                   if key[:3] == selector and key[3] is not None and (not platforms or key[3] in platforms)
                   for r in cube.rows(key, whole[0], whole[-1])]
        else:
            got = cube.rows((*selector, platforms[0] if platforms else None), whole[0], whole[-1])
        n, nbytes = len(got), len(got) * _CUBE_ROW_BYTES
        bucket_list = buckets(q.time_bucket, q.h_start, q.h_end)
        if q.segment_by_platform:
            counts = {(r[0], r[1]): int(r[2]) for r in got}
            seen = {r[1] for r in got}
            for lo, hi in parts:
                res = general(cur, _sub(q, lo, hi), pipe)
                n, nbytes = n + res.rows_read, nbytes + res.bytes_read
                for b, p, c in res.rows:
                    seen.add(p)  # the general path lists exactly the platforms with events in its part
                    if c:
                        counts[(b, p)] = c
            plist = sorted(seen)  # code-point order
            rows = [(b, p, counts.get((b, p), 0)) for b in bucket_list for p in plist]
        else:
            counts = {r[0]: int(r[1]) for r in got}
            for lo, hi in parts:
                res = general(cur, _sub(q, lo, hi), pipe)
                n, nbytes = n + res.rows_read, nbytes + res.bytes_read
                for b, c in res.rows:
                    if c:
                        counts[b] = c
            rows = [(b, counts.get(b, 0)) for b in bucket_list]
        return Result(pipe.columns_for(q), rows, len(rows), n, nbytes)

    return answer


__all__ = ["engagement", "active_users", "ranking", "masked_ranking", "split_window", "bucket_end"]


# ----------------------------------------------------------------------------- ranking pipes

@dataclasses.dataclass(frozen=True)
class _RankingMarts:
    spans: str  # first/last active day per (filter, [group_by,] keys, user): one row per (key, user)
    sums: CubeSpec  # events and durations per day × (filter, keys), read from memory (``_window_sums``)
    daily: str  # the per-user daily mart, for the spans that strictly contain the window
    key_filter: str | None  # the filter on a key column (applied to keys, any number of values)
    single: tuple[str, ...]  # the filters the spans and sums are kept for (one value each)
    levelled: bool  # the spans have a row per group_by level (macros/spans.sql, `levels`)


_RANKING = {
    "geographic_distribution": _RankingMarts("geo_user_spans", GEO_DAY_SUMS, "geographic_distribution_daily",
                                             "country", ("event_type", "platform", "device"), levelled=True),
    "event_metrics": _RankingMarts("event_user_spans", EVENT_DAY_SUMS, "user_engagement_daily",
                                   None, ("platform", "device", "country"), levelled=False),
}


# The spans pay off when the window covers most of the data: then few spans strictly contain it (the
# undecided ones, checked against the daily mart). For a shorter window the general path, which reads
# only the window's daily rows, is cheaper (measured in docs/PERFORMANCE.md). Either path is exact;
# this only picks the faster one.
SPAN_MIN_COVER = 0.75


def _window_sums(cur, marts: _RankingMarts, f: tuple[str, str], lo: datetime, hi: datetime, keys: tuple[str, ...],
                 key_values: list[str] | None) -> tuple[list[tuple], int] | None:
    """([(*keys, event_count, duration_sum)] of the keys with events on the days lo..hi under the
    single filter ``f`` (and, for the places, the country list), the number of day-sums rows summed),
    from the day sums in memory; None for a snapshot without them."""
    index = day_sums(cur, marts.sums)
    if index is None:
        return None
    sums, n = index.totals(f, lo, hi, len(keys))
    if key_values:
        at = keys.index(marts.key_filter)
        sums = [r for r in sums if r[at] in key_values]
    return sums, n


def _period_extent(cur, table: str, where: str = "TRUE") -> tuple[datetime, datetime] | None:
    """(first, last) ``period_start`` of ``table``'s rows passing ``where`` (a snapshot's first and last
    day or hour with events), None when it has none; computed once per snapshot (serving/snapshots.py,
    snapshot_fact)."""

    def first_and_last() -> tuple[datetime, datetime] | None:
        lo, hi = cur.execute(f"SELECT min(period_start), max(period_start) FROM {table} WHERE {where}").fetchone()
        return None if lo is None else (lo, hi)

    return snapshot_fact(("period_extent", table, where), first_and_last)


def _data_days(cur, sums: str) -> tuple[datetime, datetime] | None:
    """(first, last) day with events in the snapshot, from the day sums without a filter."""
    return _period_extent(cur, sums, "filter_dim = ''")


def within_data(cur, q: PipeQuery, pipe) -> PipeQuery:
    """``q`` with a window that reaches past the snapshot's data (from before its first event, to
    after its last: "all time", "until now") cut at the days holding data: the same rows, so the
    same answer, and its edges are whole days (the day sums, spans and masks take it)."""
    try:
        hours = _period_extent(cur, f"{pipe.marts}_hourly")  # the first and last hour with events
    except duckdb.CatalogException:
        return q
    if hours is None or q.h_end < hours[0] or q.h_start > hours[1]:
        return q
    lo = hours[0].replace(hour=0) if q.h_start <= hours[0] else q.start
    hi = hours[1].replace(hour=23, minute=59, second=59) if q.h_end >= hours[1] else q.end
    return q if (lo, hi) == (q.start, q.end) else _sub(q, lo, hi)


class SpanCounts:
    """Per key (a place at one level, an event type), the user spans of one filter counted by first
    and by last active day, cumulated over the days (numpy, ``int64``). Over a window [A, B] the spans
    that meet it are those with a first day <= B, less those with a last day < A (such a span starts
    before A too); when no span can strictly contain the window (A is the first day with data or B
    the last) every one of them is active in it: the distinct users per key are two lookups.
    ~2-3 ms less per request than counting the spans in DuckDB (event_metrics, geographic_distribution
    over "all time" or "until now" at 10 M events); once per snapshot and filter ~10-100 ms to load."""

    def __init__(self, keys: list[tuple], first: datetime, by_first: np.ndarray, by_last: np.ndarray):
        self.keys, self.first = keys, first
        self._by_first, self._by_last = by_first, by_last  # [key, day]: spans with first/last day <= day

    @classmethod
    def load(cls, cur, marts: "_RankingMarts", where: str, params: list, keys: tuple[str, ...]) -> "SpanCounts":
        klist = ", ".join(keys)
        got = cur.execute(f"""
WITH spans AS (SELECT {klist}, first_day, last_day FROM {marts.spans} WHERE {where}),
by_day AS (
    SELECT {klist}, 0 AS edge, first_day AS day, count(*) AS n FROM spans GROUP BY ALL
    UNION ALL
    SELECT {klist}, 1 AS edge, last_day AS day, count(*) AS n FROM spans GROUP BY ALL
),
start AS (SELECT min(first_day) AS first FROM spans)
SELECT dense_rank() OVER (ORDER BY {klist}) - 1 AS code, {klist}, edge, date_diff('day', first, day) AS d, n, first
FROM by_day, start""", params).fetchnumpy()
        code = np.asarray(got["code"], dtype=np.int64)
        if not len(code):
            return cls([], datetime.min, np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64))
        _, at = np.unique(code, return_index=True)  # a row of each key, in code order
        names = [object_column(got[c]) for c in keys]
        key_list = [tuple(n[i] for n in names) for i in at.tolist()]
        day = np.asarray(got["d"], dtype=np.int64)
        counts = np.zeros((2, len(key_list), int(day.max()) + 1), dtype=np.int64)
        np.add.at(counts, (np.asarray(got["edge"], dtype=np.int64), code, day), np.asarray(got["n"], dtype=np.int64))
        counts = counts.cumsum(axis=2)
        return cls(key_list, got["first"][0].item(), counts[0], counts[1])

    def meeting(self, a: datetime, b: datetime) -> dict[tuple, int]:
        """{key: spans that meet the days a..b}."""
        days = self._by_first.shape[1]
        ia, ib = (a - self.first).days, min((b - self.first).days, days - 1)
        if ib < 0 or ia >= days:
            return {}
        n = self._by_first[:, ib] - (self._by_last[:, ia - 1] if ia > 0 else 0)
        return dict(zip(self.keys, n.tolist()))


def _span_counts(cur, marts: "_RankingMarts", where: str, params: list, keys: tuple[str, ...]) -> SpanCounts:
    return snapshot_fact(("span_counts", marts.spans, *params, keys), lambda: SpanCounts.load(cur, marts, where, params, keys))


def _covers_most(days: tuple[datetime, datetime] | None, a: datetime, b: datetime) -> bool:
    if days is None:
        return False
    lo, hi = days
    overlap = (min(b, hi) - max(a, lo)).days + 1
    return overlap >= SPAN_MIN_COVER * ((hi - lo).days + 1)


def calendar_bucket(h_start: datetime, h_end: datetime) -> str | None:
    """'day', 'week' (ISO, from Monday) or 'month' when the hours h_start..h_end are exactly one such
    UTC bucket, else None."""
    for grain in ("day", "week", "month"):
        if h_start == truncate(grain, h_start) and bucket_end(grain, h_start) == h_end:
            return grain
    return None


def _one_bucket_ranking(cur, pipe, q: PipeQuery, grain: str, keys: tuple[str, ...], key_filter: str | None,
                        key_values: list[str] | None) -> Result | None:
    """A ranking over exactly one calendar bucket without filters (a country list aside, for the
    places): the cube's rows of that bucket (in memory, serving/cubes.py), each already the exact
    distinct users of its key in the whole window, sorted and cut. None (take another path) for a
    snapshot without the cube."""
    if pipe.name == "event_metrics":  # engagement_cube's rows with filter_dim 'event_type', one per type
        cube = cube_index(cur, ENGAGEMENT)
        if cube is None:
            return None
        got = [(key[2], *r[1:]) for key in cube.selectors() if key[:2] == (grain, "event_type")
               for r in cube.rows(key, q.h_start, q.h_start)]
    else:  # geo_cube's rows of this group_by level: (period_start, country, region, city, sums)
        cube = cube_index(cur, GEO)
        if cube is None:
            return None
        measures = 1 + len(GEO.labels)  # after period_start and the place names
        got = [(*r[1:1 + len(keys)], *r[measures:]) for r in cube.rows((grain, q.group_by), q.h_start, q.h_start)]
        if key_values:
            got = [r for r in got if r[keys.index(key_filter)] in key_values]
    k = len(keys)
    got.sort(key=lambda r: (-r[k], r[:k]))  # event_count desc, then the keys (code-point order, as DuckDB)
    rows = [(*r[:k], int(r[k]), int(r[k + 1]), _avg(r[k + 2], r[k])) for r in got[:q.limit]]
    return Result(pipe.columns_for(q), rows, len(got), len(got), len(got) * _CUBE_ROW_BYTES)


def ranking(general: Callable, level_keys: Callable[[PipeQuery], tuple[str, ...]]) -> Callable:
    """The ranking pipes over a window of WHOLE days with no filter or one single-valued filter.

    Sums come from the day-sums mart (in memory, serving/cubes.py ``DaySums``). Distinct users per key: from the user spans, one row per
    (key, user) at the requested level, so users are counted with count(*). A span whose first or
    last active day lies in [A, B] is active in the window; one that does not meet [A, B] is not;
    one that strictly contains [A, B] (undecided) is checked against the daily per-user mart inside
    the window, in a second statement that runs only when a returned key has such spans. A window
    from the data's first day or to its last has none: its users per key are the spans that meet
    it, counted in memory (``SpanCounts``) without a statement."""

    def answer(cur, q: PipeQuery, pipe) -> Result:
        marts = _RANKING[pipe.name]
        q = within_data(cur, q, pipe)
        filters = dict(pipe.filters_of(q))
        key_values = filters.pop(marts.key_filter, None) if marts.key_filter else None
        f = _one_filter(filters, marts.single)
        if f is None or q.h_start.hour != 0 or q.h_end.hour != 23:
            return general(cur, q, pipe)
        a, b = q.h_start, q.h_end.replace(hour=0)
        keys = level_keys(q)
        grain = calendar_bucket(q.h_start, q.h_end)
        if grain and f == ("", ""):
            got = _one_bucket_ranking(cur, pipe, q, grain, keys, marts.key_filter, key_values)
            if got is not None:
                return got
        try:
            days = _data_days(cur, marts.sums.table)
        except duckdb.CatalogException:  # a snapshot published before the spans existed
            return general(cur, q, pipe)
        if days is None:
            return general(cur, q, pipe)
        # A span strictly contains [A, B] only if there are active days before A and after B.
        undecided_possible = days[0] < a and b < days[1]
        if undecided_possible and not _covers_most(days, a, b):
            return general(cur, q, pipe)
        window_sums = _window_sums(cur, marts, f, a, b, keys, key_values)
        if window_sums is None:
            return general(cur, q, pipe)
        span_where = "filter_dim = ? AND filter_value = ?" + (" AND group_by = ?" if marts.levelled else "")
        span_params = [f[0], f[1], *([q.group_by] if marts.levelled else [])]
        if not undecided_possible:  # every span that meets the window is active in it
            try:
                counts = _span_counts(cur, marts, span_where, span_params, keys)
            except (duckdb.CatalogException, duckdb.BinderException):  # published before the spans (or their levels)
                return general(cur, q, pipe)
            sums, n = window_sums
            return _ranked(pipe, q, len(keys), sums, n + len(counts.keys), counts.meeting(a, b))
        klist = ", ".join(keys)
        key_where, key_params = "", []
        if key_values:
            key_where = f" AND list_contains(?::VARCHAR[], {marts.key_filter})"
            key_params = [list(key_values)]
        got = _rows_if_present(cur, f"""
SELECT {klist}, count(*) FILTER (WHERE first_day >= ? OR last_day <= ?) AS users,
       count(*) FILTER (WHERE first_day < ? AND last_day > ?) AS undecided, count(*) AS n
FROM {marts.spans} WHERE {span_where} AND first_day <= ? AND last_day >= ?{key_where}
GROUP BY {klist}""", [a, b, a, b, *span_params, b, a, *key_params])
        if got is None:
            return general(cur, q, pipe)
        k = len(keys)
        sums, n = window_sums  # the keys with events in the window
        counted = {r[:k]: (int(r[k]), int(r[k + 1])) for r in got}  # (decided users, undecided spans)
        n += sum(int(r[k + 2]) for r in got)
        ranked = sorted(sums, key=lambda r: (-r[k], r[:k]))  # event_count desc, keys in code-point order
        top = ranked[:q.limit]
        users = {r[:k]: counted.get(r[:k], (0, 0))[0] for r in top}
        if any(counted.get(r[:k], (0, 0))[1] for r in top):  # the undecided spans active inside the window
            join_on = " AND ".join(f"d.{c} = s.{c}" for c in keys)
            daily_filter = f" AND d.{f[0]} = ?" if f[0] else ""
            inside = cur.execute(f"""
WITH undecided AS (
    SELECT {klist}, user_key FROM {marts.spans}
    WHERE {span_where} AND first_day < ? AND last_day > ?{key_where}
)
SELECT {klist}, count(*) FROM (
    SELECT DISTINCT {", ".join(f"s.{c}" for c in keys)}, s.user_key
    FROM undecided AS s
    JOIN {marts.daily} AS d ON d.user_key = s.user_key AND {join_on}
    WHERE d.period_start BETWEEN ? AND ?{daily_filter}
      AND d.user_key IN (SELECT user_key FROM undecided)
) GROUP BY {klist}""", [*span_params, a, b, *key_params, a, b, *([f[1]] if f[0] else [])]).fetchall()
            for r in inside:
                if r[:k] in users:
                    users[r[:k]] += int(r[k])
        return _ranked(pipe, q, k, ranked, n, users)

    return answer


def _ranked(pipe, q: PipeQuery, k: int, sums: list[tuple], n: int, users: dict[tuple, int]) -> Result:
    """The ranking's rows: ``sums`` ((*keys, event_count, duration_sum) per key with events) by event
    count, then keys (code-point order, as DuckDB), cut at the limit, with each key's ``users``."""
    ranked = sorted(sums, key=lambda r: (-r[k], r[:k]))
    rows = [(*r[:k], r[k], users.get(r[:k], 0), _avg(r[k + 1], r[k])) for r in ranked[:q.limit]]
    return Result(pipe.columns_for(q), rows, len(ranked), n, n * _CUBE_ROW_BYTES)


def _avg(total, count):
    return total / count if count else None


# ----------------------------------------------------------------------------- event-type masks

MASK_BITS = 64  # user_event_types_daily.event_types is a UBIGINT


def _type_bits(cur) -> dict[int, str] | None:
    """{bit: event_type} of the snapshot (once per snapshot); None when a type has no bit in the
    masks (more than MASK_BITS types)."""

    def load() -> dict[int, str] | None:
        bits = dict(cur.execute("SELECT bit, event_type FROM event_type_bits").fetchall())
        return None if any(b >= MASK_BITS for b in bits) else bits

    return snapshot_fact(("event_type_bits",), load)


def _place_hashes(cur, spec: CubeSpec, keys: tuple[str, ...]) -> dict[int, tuple] | None:
    """{hash(keys): keys} of every place of the snapshot at this level (once per snapshot; the day
    sums hold every place with events). None if two places share a hash: then places are grouped by
    their names."""

    def load() -> dict[int, tuple] | None:
        cols = ", ".join(keys)
        return hash_index(cur.execute(f"SELECT hash({cols}), {cols} FROM (SELECT DISTINCT {cols} FROM {spec.table})"
                                      ).fetchall())

    return snapshot_fact(("place_hashes", spec.table, keys), load)


def hash_index(rows: list[tuple]) -> dict[int, tuple] | None:
    """{hash: names} of distinct rows (hash, *names); None when two of them share a hash."""
    by_hash = {r[0]: tuple(r[1:]) for r in rows}
    return by_hash if len(by_hash) == len(rows) else None


def _users_per_place(cur, marts: "_RankingMarts", keys: tuple[str, ...], users_from: str,
                     params: list) -> tuple[dict[tuple, int], int]:
    """({place: distinct users}, rows read) over ``users_from`` (rows of user_key and the places).

    Grouped by (place, user) first, then counted per place (``query.distinct_users_sql``). The
    place is grouped by as one 64-bit hash of its names, not by the names (over 61 days at 10 M
    events, by city: ~14 ms instead of ~46); the hashes map back to the names through the
    snapshot's places (``_place_hashes``: exact, since no two places there share a hash)."""
    by_hash = _place_hashes(cur, marts.sums, keys)
    if by_hash is not None:
        got = cur.execute(distinct_users_sql(users_from, [f"hash({', '.join(keys)}) AS place"]), params).fetchall()
        if all(r[0] in by_hash for r in got):
            return {by_hash[r[0]]: int(r[1]) for r in got}, sum(int(r[2]) for r in got)
    got = cur.execute(distinct_users_sql(users_from, keys), params).fetchall()
    k = len(keys)
    return {r[:k]: int(r[k]) for r in got}, sum(int(r[k + 1]) for r in got)


def mask_part_where(part: Part, filters: dict[str, list[str]], type_bits: dict[str, int],
                    prefix: str = "") -> tuple[str, list[Any]]:
    """``part_where`` for user_event_types_daily: an event_type filter is a test of the mask's bits
    (no row passes when none of the types has a bit: the snapshot has no such event)."""
    types = filters.get("event_type")
    where, params = part_where(part, {k: v for k, v in filters.items() if k != "event_type"}, prefix)
    if types is not None:
        where += f" AND ({prefix}event_types & CAST(? AS UBIGINT)) <> 0"
        params.append(sum(1 << type_bits[t] for t in set(types) if t in type_bits))
    return where, params


def masked_window_sql(cur, mart: str, columns: tuple[str, ...], h_start: datetime, h_end: datetime,
                      filters: dict[str, list[str]]) -> tuple[str, list[Any]] | None:
    """``query.source_sql`` for the active users (``columns``: period_start, user_key and filter
    columns the masks have) with the whole days read from the event-type masks
    (user_event_types_daily: one row per day × user × platform, device and place, ~2.5x fewer than
    active_users_daily; over a 48-day window ~1.6-2.2x faster without an event_type filter, as fast
    with one) and the edge hours from ``<mart>_hourly``. None when the snapshot's masks cannot answer
    (more event types than bits, or published before the masks)."""
    try:
        bits = _type_bits(cur)
    except duckdb.CatalogException:
        return None
    if bits is None:
        return None
    type_bits = {t: b for b, t in bits.items()}
    return source_sql(mart, columns, h_start, h_end, filters,
                      daily=("user_event_types_daily", lambda part, f: mask_part_where(part, f, type_bits)))


def masked_ranking(general: Callable, level_keys: Callable[[PipeQuery], tuple[str, ...]]) -> Callable:
    """The ranking pipes over any window with a whole day, whatever the filters (the cases the user
    spans leave, ``ranking``), from the event-type masks (docs/ARCHITECTURE.md, "Event-type masks").

    The window's whole days are read from user_event_types_daily (one row per day × user × platform,
    device, country, region, city with the set of event types sent, ~2.5x fewer rows than the daily
    marts), its partial edge days from the pipe's hourly mart. Distinct users:

    * event_metrics: one aggregation by user (``bit_or``) gives each user's set of types in the
      window; the users are counted per distinct set (a few hundred), and numpy adds those counts up
      per type bit. A user counts for a type iff one of their rows in the window has that type.
    * geographic_distribution: the distinct users per place at the group_by level over those rows
      (``_users_per_place``), an event_type filter being a test of the mask's bits.

    Sums: the day sums (in memory, serving/cubes.py ``DaySums``) for the whole days when the filters
    are one single value (or none; for the places plus any country list), else the pipe's marts,
    added to the edge hours' sums."""

    def answer(cur, q: PipeQuery, pipe) -> Result:
        try:
            bits = _type_bits(cur)
        except duckdb.CatalogException:  # a snapshot published before the type bits existed
            return general(cur, q, pipe)
        parts = window_parts(q.h_start, q.h_end)
        if bits is None or all(part.grain == "hourly" for part in parts):  # under a day: the general path is as quick
            return general(cur, q, pipe)
        marts = _RANKING[pipe.name]
        keys = level_keys(q)
        k = len(keys)
        klist = ", ".join(f"r.{key}" for key in keys)
        filters = pipe.filters_of(q)
        rest = {k: v for k, v in filters.items() if k != marts.key_filter}
        single = _one_filter(rest, marts.single)
        type_bits = {t: b for b, t in bits.items()}
        users_sql, sums_sql, params, sum_params = [], [], [], []
        sums_from_memory: list[tuple] = []
        n = 0
        for part in parts:
            where, where_params = part_where(part, filters, prefix="r.")
            if part.grain == "daily":
                mask_where, mask_params = mask_part_where(part, filters, type_bits, "r.")
                source = "r.event_types" if pipe.name == "event_metrics" else klist
                users_sql.append(f"SELECT r.user_key, {source} FROM user_event_types_daily AS r WHERE {mask_where}")
                params += mask_params
            else:
                if pipe.name == "event_metrics":
                    source, join = "CAST(1 AS UBIGINT) << b.bit AS event_types", " JOIN event_type_bits AS b USING (event_type)"
                else:
                    source, join = klist, ""
                users_sql.append(f"SELECT r.user_key, {source} FROM {pipe.marts}_hourly AS r{join} WHERE {where}")
                params += where_params
            window_sums = None
            if part.grain == "daily" and single is not None:
                window_sums = _window_sums(cur, marts, single, part.lo, part.hi, keys, filters.get(marts.key_filter))
            if window_sums is not None:  # the whole days' sums per key, from memory
                sums_from_memory += window_sums[0]
                n += window_sums[1]
            else:
                sums_sql.append(f"SELECT {klist}, r.event_count, r.duration_sum FROM {pipe.marts}_{part.grain} AS r WHERE {where}")
                sum_params += where_params
        users_from = " UNION ALL ".join(users_sql)
        try:
            if pipe.name == "event_metrics":
                sets = cur.execute(f"""
SELECT event_types, count(*) AS users, sum(n) AS source_rows FROM (
    SELECT bit_or(event_types) AS event_types, count(*) AS n FROM ({users_from}) GROUP BY user_key
) GROUP BY event_types""", params).fetchnumpy()
                masks = np.asarray(sets["event_types"], dtype=np.uint64)
                counts = np.asarray(sets["users"], dtype=np.int64)
                users = {(bits[b],): int(counts[(masks >> np.uint64(b)) & np.uint64(1) == 1].sum()) for b in bits}
                n += int(np.asarray(sets["source_rows"]).sum())
            else:
                users, rows_read = _users_per_place(cur, marts, keys, users_from, params)
                n += rows_read
        except (duckdb.CatalogException, duckdb.BinderException):  # published before the masks existed
            return general(cur, q, pipe)
        sums: dict[tuple, list[int]] = {}
        if sums_sql:  # the edge hours (and whole days the day sums do not hold)
            for r in cur.execute(f"SELECT {', '.join(keys)}, sum(event_count), sum(duration_sum), count(*) "
                                 f"FROM ({' UNION ALL '.join(sums_sql)}) GROUP BY ALL", sum_params).fetchall():
                sums[r[:k]] = [int(r[k]), int(r[k + 1])]
                n += int(r[k + 2])
        for r in sums_from_memory:
            total = sums.setdefault(r[:k], [0, 0])
            total[0] += r[k]
            total[1] += r[k + 1]
        return _ranked(pipe, q, k, [key + tuple(v) for key, v in sums.items() if v[0]], n, users)

    return answer
