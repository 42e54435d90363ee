"""Query-string parameters of the pipes: accepted forms, defaults and the 400 messages.

Every parameter is a :class:`Param` (declared here once, composed per pipe in ``serving/pipes.py``).
The parsed, validated request is a :class:`PipeQuery`. Rules (CONTRACT.md section 2):

* an empty value (``?platform=``) means "not given": no filter / the default;
* a repeated scalar parameter takes its last value; repeated filters add up;
* a filter is a comma-separated list of exact, case-sensitive values (``web,ios``); pieces are
  kept literally, so ``platform=,web`` selects the empty platform and ``web``;
* unknown parameters are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence

from serving.errors import ApiError

DATE_FORMS = "YYYY-MM-DD HH:MM:SS, YYYY-MM-DDTHH:MM:SS or YYYY-MM-DD (UTC, zero-padded)"
TIME_BUCKETS = ("hour", "day", "week", "month")
GROUP_BY = {"country": ("country",), "region": ("country", "region"), "city": ("country", "region", "city")}
FILTERS = ("event_type", "platform", "device", "country")
LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT = 1, 10_000, 100
MAX_BUCKETS = 10_000
DEFAULT_WINDOW = timedelta(days=7)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T]([0-9]{2}):([0-9]{2}):([0-9]{2}))?", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]{1,9}", re.ASCII)


def _shown(raw: str) -> str:
    """The offending value, shortened, for an error message."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")


def bad(name: str, raw: str | None, accepted: str) -> ApiError:
    got = f" (got {_shown(raw)})" if raw is not None else ""
    return ApiError(400, f"Invalid parameter {name}{got}: {accepted}.")


# ----------------------------------------------------------------------------- value parsers


def parse_datetime(name: str, raw: str) -> datetime:
    m = _DATE_RE.fullmatch(raw)
    if m is None:
        raise bad(name, raw, f"use {DATE_FORMS}")
    y, mo, d, h, mi, s = (int(g) if g is not None else 0 for g in m.groups())
    try:
        return datetime(y, mo, d, h, mi, s)
    except ValueError:
        raise bad(name, raw, f"not a valid date and time; use {DATE_FORMS}") from None


def parse_choice(choices: Sequence[str]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise bad(name, raw, "use one of " + ", ".join(choices))
        return raw

    return parse


def parse_limit(name: str, raw: str) -> int:
    if not _DIGITS_RE.fullmatch(raw) or not LIMIT_MIN <= int(raw) <= LIMIT_MAX:
        raise bad(name, raw, f"use an integer from {LIMIT_MIN} to {LIMIT_MAX}")
    return int(raw)


def parse_boolean(name: str, raw: str) -> bool:
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        raise bad(name, raw, "use true, false, 1 or 0")
    return value


# ----------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Param:
    """One query parameter: its documented type/default and how to parse it into PipeQuery.<attr>."""

    name: str
    type: str  # Tinybird/ClickHouse-style type, for docs and OpenAPI
    description: str
    default: str | None = None  # documented default
    choices: tuple[str, ...] | None = None
    parse: Callable[[str, str], Any] | None = None  # (name, raw) -> value, raises ApiError(400)
    attr: str | None = None  # PipeQuery attribute set by this parameter
    is_filter: bool = False
    minimum: int | None = None
    maximum: int | None = None
    example: str | None = None


START_DATE = Param(
    "start_date", "DateTime", f"Window start (UTC): {DATE_FORMS}. The window is whole hours: it starts at "
    "the start of this hour.", "end_date minus 7 days", parse=parse_datetime, attr="start",
    example="2023-01-01 00:00:00",
)
END_DATE = Param(
    "end_date", "DateTime", f"Window end (UTC), inclusive: {DATE_FORMS}. The window ends at the end of this "
    "hour.", "now", parse=parse_datetime, attr="end", example="2023-12-31 23:59:59",
)
TIME_BUCKET = Param(
    "time_bucket", "String", "Bucket size of the time series: hour, day, week (ISO, starting Monday) or month. "
    "A bucket is labelled with its start. At most 10,000 buckets per request.", "day",
    choices=TIME_BUCKETS, parse=parse_choice(TIME_BUCKETS), attr="time_bucket",
)
LIMIT = Param(
    "limit", "Int32", f"Rows returned, {LIMIT_MIN}..{LIMIT_MAX}.", str(LIMIT_DEFAULT), parse=parse_limit,
    attr="limit", minimum=LIMIT_MIN, maximum=LIMIT_MAX,
)
GROUP_BY_PARAM = Param(
    "group_by", "String", "Row key: country; country, region; or country, region, city.", "region",
    choices=tuple(GROUP_BY), parse=parse_choice(tuple(GROUP_BY)), attr="group_by",
)
SEGMENT_BY_PLATFORM = Param(
    "segment_by_platform", "Boolean", "One row per bucket and platform (true) or per bucket (false). "
    "Accepts true, false, 1, 0.", "true", choices=("true", "false", "1", "0"), parse=parse_boolean,
    attr="segment_by_platform",
)


def filter_param(name: str) -> Param:
    return Param(
        name, "Array(String)", f"Only events whose {name} is one of these comma-separated values (exact, "
        f"case-sensitive). Empty: no filter.", None, is_filter=True,
        example={"platform": "web,ios", "event_type": "page_view", "country": "US", "device": "desktop"}[name],
    )


FILTER_PARAMS = {name: filter_param(name) for name in FILTERS}


@dataclass
class PipeQuery:
    """A validated pipe request. Field names match tests/reference.py's PipeQuery."""

    pipe: str
    start: datetime
    end: datetime
    time_bucket: str = "day"
    filters: dict[str, list[str]] = field(default_factory=dict)
    limit: int = LIMIT_DEFAULT
    group_by: str = "region"
    segment_by_platform: bool = True

    @property
    def h_start(self) -> datetime:
        return self.start.replace(minute=0, second=0, microsecond=0)

    @property
    def h_end(self) -> datetime:
        return self.end.replace(minute=0, second=0, microsecond=0)


# ----------------------------------------------------------------------------- buckets


def truncate(tb: str, t: datetime) -> datetime:
    """date_trunc(tb, t) for tb in hour/day/week/month (week: ISO, Monday)."""
    t = t.replace(minute=0, second=0, microsecond=0)
    if tb == "hour":
        return t
    t = t.replace(hour=0)
    if tb == "day":
        return t
    if tb == "week":
        return t - timedelta(days=t.weekday())
    return t.replace(day=1)


def bucket_count(tb: str, h_start: datetime, h_end: datetime) -> int:
    a, b = truncate(tb, h_start), truncate(tb, h_end)
    if tb == "hour":
        return (b - a) // timedelta(hours=1) + 1
    if tb == "day":
        return (b - a).days + 1
    if tb == "week":
        return (b - a).days // 7 + 1
    return (b.year * 12 + b.month) - (a.year * 12 + a.month) + 1


def buckets(tb: str, h_start: datetime, h_end: datetime) -> list[datetime]:
    """Every bucket label from date_trunc(tb, h_start) to date_trunc(tb, h_end), in order."""
    first, last = truncate(tb, h_start), truncate(tb, h_end)
    out = []
    if tb == "month":
        y, m = first.year, first.month
        while (y, m) <= (last.year, last.month):
            out.append(datetime(y, m, 1))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}[tb]
    t = first
    while True:
        out.append(t)
        if t >= last:
            return out
        t += step


# ----------------------------------------------------------------------------- request parsing


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def _last(values: list[str]) -> str | None:
    return values[-1] if values else None


def parse_pipe_query(pipe: str, params: Sequence[Param], query: Mapping[str, list[str]],
                     time_series: bool) -> PipeQuery:
    """Validate a request's query parameters against a pipe's declared parameters."""
    values: dict[str, Any] = {}
    filters: dict[str, list[str]] = {}
    for p in params:
        given = query.get(p.name) or []
        if p.is_filter:
            pieces: dict[str, None] = {}  # ordered, without duplicates
            for raw in given:
                if raw != "":
                    pieces.update(dict.fromkeys(raw.split(",")))
            if pieces:
                filters[p.name] = list(pieces)
            continue
        raw = _last(given)
        if raw is None or raw == "":
            continue
        assert p.parse is not None and p.attr is not None
        values[p.attr] = p.parse(p.name, raw)

    end = values.pop("end", None)
    start = values.pop("start", None)
    if end is None:
        end = utc_now()
    if start is None:
        try:
            start = end - DEFAULT_WINDOW
        except OverflowError:
            start = datetime.min
    if start > end:
        raise ApiError(
            400,
            f"Invalid parameters start_date and end_date: start_date ({start.isoformat(' ')}) is after "
            f"end_date ({end.isoformat(' ')}); give start_date <= end_date, each as {DATE_FORMS}.",
        )
    q = PipeQuery(pipe=pipe, start=start, end=end, filters=filters, **values)
    if time_series:
        n = bucket_count(q.time_bucket, q.h_start, q.h_end)
        if n > MAX_BUCKETS:
            raise ApiError(
                400,
                f"Invalid parameters start_date, end_date and time_bucket: the window has {n} "
                f"{q.time_bucket} buckets, at most {MAX_BUCKETS} are allowed; narrow start_date/end_date "
                f"or use a larger time_bucket (one of {', '.join(TIME_BUCKETS)}).",
            )
    return q


def format_datetime(t: datetime | date) -> str:
    """'YYYY-MM-DD HH:MM:SS' (4-digit year even before 1000)."""
    if not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day)
    return t.replace(microsecond=0).isoformat(" ")
