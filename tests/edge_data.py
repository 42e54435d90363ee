"""Hand-made hard cases for the analytics engine (a helper module, not a test file).

``edge_case_events`` returns valid ``user_events`` rows built to break the usual shortcuts:
sessions across hour/day/ISO-week/month boundaries, ties on a session's earliest timestamp,
exact duplicate rows, users on several platforms, platforms differing only in case, empty
optional fields, unicode places, awkward strings, zero and huge durations, and a few events
far outside the range. A small user pool fills the rest, so exact distinct counts matter.

``split_into_files`` scatters the rows over files in random order (most files are "late"
for some of their rows) and ``write_ndjson`` writes one file the way a producer would.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

# Monday 2025-01-27 + 10 days covers a month boundary (Feb 1) and an ISO-week one (Mon Feb 3).
DEFAULT_START = datetime(2025, 1, 27)
UINT32_MAX = 2**32 - 1
FIELDS = ("timestamp", "user_id", "event_type", "session_id", "duration",
          "device", "platform", "page", "country", "region", "city")

# (country, region, city), unicode on purpose, plus the fully unknown place.
PLACES = [
    ("US", "California", "San Francisco"), ("US", "New York", "New York"),
    ("BR", "São Paulo", "São Paulo"), ("CH", "Zürich", "Zürich"), ("RU", "Москва", "Москва"),
    ("JP", "東京都", "東京"), ("DE", "Bayern", "München"), ("FR", "Île-de-France", "Paris"),
    ("KR", "서울특별시", "서울"), ("EG", "القاهرة", "القاهرة"), ("US", "California", ""),
    ("", "", ""),
]
# Case variants and '' are distinct platforms ('' < 'Web' < 'web' by code point).
PLATFORMS = ["web", "web", "web", "ios", "ios", "android", "android", "Web", "WEB", ""]
DEVICES = ["desktop", "desktop", "mobile", "mobile", "mobile", "tablet", ""]
EVENT_TYPES = ["page_view", "page_view", "page_view", "click", "click", "scroll",
               "add_to_cart", "purchase", "signup", "Click"]
PAGES = ["/", "/pricing", "/products/42", "/blog/crème-brûlée", '/search?q=a,b "c"',
         "/multi\nline", "/cart", ""]


def _fmt(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _ev(ts: datetime, user: str, session: str, event_type: str = "page_view", duration: int = 5,
        platform: str = "web", device: str = "desktop", place: tuple[str, str, str] = PLACES[0],
        page: str = "/") -> dict:
    country, region, city = place
    return {"timestamp": _fmt(ts), "user_id": user, "event_type": event_type,
            "session_id": session, "duration": duration, "device": device,
            "platform": platform, "page": page, "country": country, "region": region,
            "city": city}


def _crafted(rng: random.Random, start: datetime, end: datetime) -> list[dict]:
    out: list[dict] = []
    S = timedelta(seconds=1)
    n_days = max(1, (end - start).days)

    def at(day: int, **kw) -> datetime:  # a time on day ``day`` of the range (wrapped)
        return start + timedelta(days=day % n_days, **kw)

    def session(sid: str, user: str, times: list[datetime], **kw) -> None:
        for i, t in enumerate(times):
            out.append(_ev(t, user, sid, "page_view" if i == 0 else rng.choice(EVENT_TYPES),
                           rng.choice([0, 0, 3, 17, 120, 600]), **kw))

    # 1. Sessions across boundaries: every midnight (day; Mondays are ISO-week and 1sts are
    #    month boundaries too), and a few hour boundaries. Each crosses by a second or more.
    midnights = [start.replace(hour=0, minute=0, second=0) + timedelta(days=d)
                 for d in range(1, (end - start).days + 1)]
    midnights = [m for m in midnights if start < m < end]
    for m in midnights:
        tag = m.strftime("%Y%m%d")
        kinds = ["day"] + (["week"] if m.weekday() == 0 else []) + (["month"] if m.day == 1 else [])
        for k in kinds:
            session(f"x_{k}_{tag}", f"u_{k}", [m - 2 * S, m - S, m, m + 61 * S],
                    platform="web", device="desktop", place=PLACES[2])
        # starts just before midnight: belongs to the earlier day/week/month bucket
        session(f"x_late_{tag}", "u_night", [m - S, m + 30 * S], platform="ios",
                device="mobile", place=PLACES[5])
        # single events exactly on both sides of the boundary (bounces)
        session(f"x_b1_{tag}", "u_edge", [m - S], platform="android", device="mobile")
        session(f"x_b2_{tag}", "u_edge", [m], platform="android", device="mobile")
    for h in rng.sample(range(1, max(2, int((end - start).total_seconds() // 3600) - 1)), 8):
        t = start + timedelta(hours=h)
        session(f"x_hour_{h}", f"u_hour_{h % 3}", [t - 30 * S, t - 10 * S, t + 5 * S],
                platform=rng.choice(PLATFORMS), device="mobile", place=rng.choice(PLACES))
    # first and last second of the range
    session("x_range_first", "u_edge", [start], platform="web")
    session("x_range_last", "u_edge", [end - S], platform="web")

    # 2. Ties on the earliest timestamp with different (platform, device, country); the list
    #    order never puts the smallest first. The engine must pick the smallest tuple.
    ties = [
        [("web", "mobile", PLACES[0]), ("Web", "desktop", PLACES[0]), ("", "tablet", PLACES[2])],
        [("ios", "tablet", PLACES[5]), ("ios", "mobile", PLACES[5])],
        [("android", "mobile", PLACES[0]), ("android", "mobile", PLACES[6])],
        [("web", "desktop", PLACES[3]), ("web", "desktop", PLACES[11])],
        [("web", "", PLACES[0]), ("android", "desktop", PLACES[0])],
    ]
    for i, variants in enumerate(ties):
        t0 = at(1 + i, hours=i * 3, minutes=17)
        for platform, device, place in variants:
            out.append(_ev(t0, f"u_tie_{i}", f"x_tie_{i}", "page_view", 10, platform, device, place))
        out.append(_ev(t0 + 40 * S, f"u_tie_{i}", f"x_tie_{i}", "click", 0, *variants[0][:2],
                       variants[0][2]))
    # a tie right on a midnight: the session starts the day before
    if midnights:
        m = midnights[len(midnights) // 2]
        for platform, device, place in [("web", "mobile", PLACES[1]), ("ios", "mobile", PLACES[4])]:
            out.append(_ev(m - S, "u_tie_m", "x_tie_midnight", "page_view", 1, platform, device, place))
        out.append(_ev(m + S, "u_tie_m", "x_tie_midnight", "click", 1, "web", "mobile", PLACES[1]))

    # 3. Exact duplicates: both copies count (a duplicated bounce is no longer a bounce).
    dup_single = _ev(at(2, hours=5), "u_dup", "x_dup_single", "page_view", 7)
    dup_pair = [_ev(at(3, hours=9, seconds=s), "u_dup", "x_dup_pair", et, d,
                    "ios", "mobile", PLACES[4]) for s, et, d in [(0, "page_view", 0), (9, "click", 3)]]
    for e in [dup_single, dup_single, *dup_pair, *dup_pair, dup_pair[1]]:
        out.append(dict(e))

    # 4. One user on many platforms (also within one hour), and one session id shared by two
    #    users (a session is identified by session_id alone).
    t = at(4, hours=13)
    for j, platform in enumerate(["web", "ios", "android", "Web", "WEB", ""]):
        session(f"x_multi_{j}", "u_multi", [t + timedelta(minutes=7 * j)], platform=platform,
                device=DEVICES[j % len(DEVICES)], place=PLACES[j % len(PLACES)])
    session("x_shared", "u_share_a", [t + timedelta(hours=2)], platform="web")
    session("x_shared", "u_share_b", [t + timedelta(hours=2, minutes=3)], platform="android",
            device="mobile", place=PLACES[7])

    # 5. Empty optional fields, alone and all together; unicode ids; awkward strings.
    t = at(5, hours=8)
    out.append(_ev(t, "u_empty", "x_empty_all", "page_view", 0, "", "", PLACES[11], ""))
    out.append(_ev(t + S, "u_empty", "x_empty_platform", "click", 0, "", "mobile", PLACES[0]))
    out.append(_ev(t + 2 * S, "u_empty", "x_empty_device", "click", 0, "web", "", PLACES[0]))
    out.append(_ev(t + 3 * S, "u_empty", "x_empty_city", "click", 0, "web", "desktop", PLACES[10]))
    out.append(_ev(t + 4 * S, "użytkownik_ß", "x_unicode_ids", "page_view", 12, "web", "desktop",
                   PLACES[5], "/blog/crème-brûlée"))
    out.append(_ev(t + 5 * S, "ユーザー", "セッション", "page_view", 12, "ios", "tablet", PLACES[8]))
    out.append(_ev(t + 6 * S, "u_strings", "x_strings", "search", 1, "web", "desktop",
                   ("US", "New York", 'New "York", NY'), '/search?q=a,b "c"\n'))

    # 6. Durations: zero (in and out of multi-event sessions) and the UInt32 maximum.
    t = at(6, hours=22)
    session("x_zero", "u_zero", [t, t + 5 * S], platform="web")
    for e in out[-2:]:
        e["duration"] = 0
    out.append(_ev(t + timedelta(minutes=5), "u_big", "x_big", "video_play", UINT32_MAX))
    out.append(_ev(t + timedelta(minutes=6), "u_big", "x_big", "video_play", UINT32_MAX))

    # 7. Far past and future, including a session that starts long before the range but has
    #    events inside it (its start, not its events, decides its bucket).
    for ts, sid in [(datetime(1970, 1, 1), "x_epoch"), (datetime(1999, 12, 31, 23, 59, 59), "x_y2k"),
                    (datetime(2000, 1, 1), "x_y2k"), (datetime(2099, 12, 31, 23, 59, 59), "x_future")]:
        out.append(_ev(ts, "u_time", sid, "page_view", 3))
    out.append(_ev(datetime(2001, 9, 9, 1, 46, 40), "u_time", "x_ancient", "page_view", 3))
    out.append(_ev(at(1, hours=2), "u_time", "x_ancient", "click", 3))
    # a session spanning several days inside the range
    session("x_long", "u_long", [at(d, hours=11) for d in (1, 3, 6)],
            platform="android", device="tablet", place=PLACES[9])
    return out


def _filler(rng: random.Random, n: int, start: datetime, end: datetime) -> list[dict]:
    """Ordinary traffic from a small user pool: many events per user, sessions of 1..12."""
    users = [f"user_{i:03d}" for i in range(max(5, n // 40))]
    span = int((end - start).total_seconds())
    out: list[dict] = []
    k = 0
    while len(out) < n:
        user = users[min(len(users) - 1, int(rng.paretovariate(1.0)) - 1)] if rng.random() < 0.5 \
            else rng.choice(users)
        sid = f"s_{k:05d}"
        k += 1
        platform, device, place = rng.choice(PLATFORMS), rng.choice(DEVICES), rng.choice(PLACES)
        t = start + timedelta(seconds=rng.randrange(span))
        length = 1 if rng.random() < 0.35 else rng.randint(2, 12)
        for i in range(min(length, n - len(out))):
            if t >= end:
                break
            out.append(_ev(t, user, sid, rng.choice(EVENT_TYPES),
                           0 if rng.random() < 0.2 else rng.randint(1, 600),
                           platform, device, place, rng.choice(PAGES)))
            t += timedelta(seconds=rng.randint(1, 400))
    return out


def edge_case_events(seed: int, n_events: int = 3000, start: datetime = DEFAULT_START,
                     days: int = 10) -> list[dict]:
    """Valid event dicts over ``[start, start + days)`` (plus a few far outside), shuffled.

    All crafted cases are always included; ordinary traffic fills up to ``n_events`` (the
    result is longer if ``n_events`` is smaller than the crafted set). Timestamps are
    ``'YYYY-MM-DD HH:MM:SS'`` UTC; every contract field is present.
    """
    if start.tzinfo is not None:
        start = start.astimezone(timezone.utc).replace(tzinfo=None)
    start = start.replace(microsecond=0)
    end = start + timedelta(days=days)
    rng = random.Random(seed)
    events = _crafted(rng, start, end)
    events += _filler(rng, max(0, n_events - len(events)), start, end)
    rng.shuffle(events)
    return events


def split_into_files(events: list[dict], seed: int, n_files: int) -> list[list[dict]]:
    """Scatter ``events`` over ``n_files`` non-empty files of random sizes, in random order.

    No two files have the same content (landing dedupes files by content).
    """
    if not events:
        return []
    rng = random.Random(seed)
    n_files = max(1, min(n_files, len(events)))
    for _ in range(100):
        order = list(range(len(events)))
        rng.shuffle(order)
        cuts = sorted(rng.sample(range(1, len(events)), n_files - 1))
        chunks = [[events[i] for i in order[a:b]]
                  for a, b in zip([0, *cuts], [*cuts, len(events)])]
        if len({orjson.dumps(c) for c in chunks}) == len(chunks):
            return chunks
    raise ValueError("could not split into files of distinct content")


def write_ndjson(path: Path | str, events: list[dict]) -> Path:
    """Write ``events`` as NDJSON, under a ``.tmp`` name first (the landing folder skips it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    os.replace(tmp, path)
    return path
