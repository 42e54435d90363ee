"""How a window is read from the marts (docs/ARCHITECTURE.md, "Why this is exact").

A window is the whole hours ``H_start..H_end``. Its whole UTC days are read from the ``*_daily``
marts, its partial edge days from the ``*_hourly`` ones (``time_bucket=hour`` reads hourly marts
only). The parts never overlap and together cover exactly the window, so the rows of their
``UNION ALL`` are the window's rows: additive measures are summed over it and distinct users are
counted over it (each ``user_key`` once per group), never added up across parts or buckets.

Only identifiers declared in ``serving/pipes.py`` are written into SQL; every value a user sends
(dates, filter values, time bucket, limit) is a bound ``?`` parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable, Sequence

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Part:
    grain: str  # "hourly" | "daily"
    lo: datetime  # inclusive bounds on period_start
    hi: datetime


def window_parts(h_start: datetime, h_end: datetime, hourly_only: bool = False) -> list[Part]:
    """Non-overlapping mart ranges covering the hours h_start..h_end (both inclusive)."""
    if not hourly_only:
        first_day = h_start if h_start.hour == 0 else _next_day(h_start)
        # The last whole day is the one whose 23:00 hour is at or before h_end.
        last_day = h_end.replace(hour=0) if h_end.hour == 23 else _prev_day(h_end.replace(hour=0))
        if first_day is not None and last_day is not None and first_day <= last_day:
            parts = []
            if h_start < first_day:
                parts.append(Part("hourly", h_start, first_day - HOUR))
            parts.append(Part("daily", first_day, last_day))
            last_day_end = last_day + timedelta(hours=23)
            if last_day_end < h_end:
                parts.append(Part("hourly", last_day_end + HOUR, h_end))
            return parts
    return [Part("hourly", h_start, h_end)]


def _next_day(t: datetime) -> datetime | None:
    if t.date() == date.max:
        return None
    return t.replace(hour=0) + DAY


def _prev_day(t: datetime) -> datetime | None:
    if t.date() == date.min:
        return None
    return t - DAY


def source_sql(
    mart: str,
    columns: Sequence[str],
    h_start: datetime,
    h_end: datetime,
    filters: dict[str, list[str]],
    hourly_only: bool = False,
    daily: tuple[str, Callable[[Part, dict[str, list[str]]], tuple[str, list[Any]]]] | None = None,
) -> tuple[str, list[Any]]:
    """``SELECT <columns> FROM <mart>_<grain> WHERE <part range> AND <filters>`` for every part, UNION ALL.

    ``mart`` and ``columns`` come from the pipe declarations; ``filters`` maps a declared column to
    the values given by the user (bound). ``daily``: (relation, its WHERE for a part and the
    filters) that holds the whole days instead of ``<mart>_daily`` (the event-type masks).
    """
    selects, params = [], []
    cols = ", ".join(columns)
    for part in window_parts(h_start, h_end, hourly_only):
        relation, where_of = daily if daily and part.grain == "daily" else (f"{mart}_{part.grain}", part_where)
        where, where_params = where_of(part, filters)
        selects.append(f"SELECT {cols} FROM {relation} WHERE {where}")
        params += where_params
    return "\nUNION ALL\n".join(selects), params


def part_where(part: Part, filters: dict[str, list[str]], prefix: str = "") -> tuple[str, list[Any]]:
    """The WHERE condition (and its bound values) of one part's rows: its period range and the
    filters; `prefix` qualifies the columns (``"h."``)."""
    where, params = [f"{prefix}period_start BETWEEN ? AND ?"], [part.lo, part.hi]
    for col, values in filters.items():
        where.append(f"list_contains(?::VARCHAR[], {prefix}{col})")  # one bound list, however many values
        params.append(list(values))
    return " AND ".join(where), params


def distinct_users_sql(src: str, groups: Sequence[str], sums: Sequence[str] = (), outer: str = "",
                       tail: str = "") -> str:
    """Per group of ``src``'s rows: ``(*groups, distinct users, *sums, rows read[, *outer])``.

    ``groups``: ``"<expression> AS <name>"`` or a column name. The rows are grouped by (groups,
    user_key) first, then counted per group: the same exact count as ``count(DISTINCT user_key)``,
    which DuckDB computes ~1.2-1.7x slower on the pipes' statements (measured on the random windows
    of bench/pipes.py)."""
    names = ", ".join(g.rsplit(" AS ", 1)[-1] for g in groups)
    summed = "".join(f"sum({m}) AS {m}, " for m in sums)
    by_user = f"SELECT {', '.join(groups)}, user_key, {summed}count(*) AS n FROM ({src}) AS w GROUP BY ALL"
    return f"SELECT {names}, count(*) AS users, {summed}sum(n) AS n{outer} FROM ({by_user}) AS u GROUP BY {names}{tail}"
