"""Realistic synthetic ``user_events`` written as landing files (``engage generate``).

The data is shaped like real tracker traffic so that the pipeline, the marts and the
benchmarks meet what production meets: Zipf-like user activity, sessions of very
different lengths (many bounces), a daily cycle, users on several platforms and now and then
away from home (another city of their country), unicode places, all the accepted timestamp
forms, optional invalid lines and late files.

Generation streams hour by hour (sessions that run past the hour are carried over), so
memory stays bounded and a million events take a few seconds. Everything is drawn from
one ``random.Random(seed)``: the same ``seed`` and ``end`` give byte-identical files.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

__all__ = ["generate", "GEO", "PLATFORMS", "EVENT_TYPES"]

# --- vocabularies -------------------------------------------------------------------------

# country -> [(region, city)], with a share of traffic. Regions/cities are consistent with
# their country; several are non-ASCII on purpose (UTF-8 must survive every layer).
GEO: dict[str, tuple[float, list[tuple[str, str]]]] = {
    "US": (30, [("California", "San Francisco"), ("California", "Los Angeles"),
                ("New York", "New York"), ("Texas", "Austin"), ("Washington", "Seattle")]),
    "GB": (8, [("England", "London"), ("England", "Manchester"), ("Scotland", "Edinburgh")]),
    "DE": (8, [("Bayern", "München"), ("Berlin", "Berlin"), ("Hamburg", "Hamburg")]),
    "FR": (6, [("Île-de-France", "Paris"), ("Auvergne-Rhône-Alpes", "Lyon")]),
    "BR": (7, [("São Paulo", "São Paulo"), ("Rio de Janeiro", "Rio de Janeiro")]),
    "CH": (2, [("Zürich", "Zürich"), ("Genève", "Genève")]),
    "RU": (4, [("Москва", "Москва"), ("Санкт-Петербург", "Санкт-Петербург")]),
    "JP": (6, [("東京都", "東京"), ("大阪府", "大阪")]),
    "IN": (9, [("Maharashtra", "Mumbai"), ("Karnataka", "Bengaluru"), ("Delhi", "New Delhi")]),
    "ES": (3, [("Cataluña", "Barcelona"), ("Comunidad de Madrid", "Madrid")]),
    "MX": (3, [("Ciudad de México", "Ciudad de México"), ("Jalisco", "Guadalajara")]),
    "KR": (3, [("서울특별시", "서울")]),
    "CN": (4, [("北京市", "北京"), ("上海市", "上海")]),
    "EG": (1, [("القاهرة", "القاهرة")]),
    "AU": (3, [("New South Wales", "Sydney"), ("Victoria", "Melbourne")]),
    "CA": (3, [("Ontario", "Toronto"), ("Québec", "Montréal")]),
}
_COUNTRIES = list(GEO)
_COUNTRY_CUM = list(itertools.accumulate(w for w, _ in GEO.values()))

PLATFORMS = ("web", "ios", "android")
_PLATFORM_CUM = list(itertools.accumulate((55, 22, 23)))
# Devices follow the platform: apps run on phones and tablets, the web on anything.
_DEVICES = {
    "web": (("desktop", "mobile", "tablet"), list(itertools.accumulate((70, 22, 8)))),
    "ios": (("mobile", "tablet"), list(itertools.accumulate((80, 20)))),
    "android": (("mobile", "tablet"), list(itertools.accumulate((90, 10)))),
}

# Event types after the first one of a session, with weights and a mean duration (seconds).
EVENT_TYPES: tuple[tuple[str, float, float], ...] = (
    ("page_view", 40, 45), ("click", 24, 2), ("scroll", 18, 8), ("search", 5, 6),
    ("add_to_cart", 5, 3), ("video_play", 2, 120), ("login", 2, 4), ("purchase", 1.5, 20),
    ("signup", 1, 30), ("share", 1.5, 2),
)
_ET_NAMES = [e[0] for e in EVENT_TYPES]
_ET_CUM = list(itertools.accumulate(e[1] for e in EVENT_TYPES))
_ET_MEAN = {e[0]: e[2] for e in EVENT_TYPES}

_PAGES = ["/", "/pricing", "/features", "/blog", "/blog/how-we-scaled", "/blog/café-olé",
          "/docs", "/docs/getting-started", "/docs/api", "/cart", "/checkout", "/signup",
          "/login", "/account", "/search", "/about", "/contact"]
_PAGES_CUM = list(itertools.accumulate(1 / (i + 1) for i in range(len(_PAGES))))
_N_PRODUCTS = 500

# Share of UTC traffic per hour of day: a smooth cycle peaking mid-afternoon UTC.
_HOUR_WEIGHT = [1 + 0.75 * math.cos(2 * math.pi * (h - 15) / 24) for h in range(24)]

# Timestamp forms other than the plain 'YYYY-MM-DD HH:MM:SS' (cumulative probability).
_P_ISO_Z, _P_OFFSET, _P_EPOCH = 0.80, 0.88, 0.94
_OFFSETS = (("+02:00", 7200), ("-03:30", -12600), ("+05:45", 20700), ("+09:00", 32400))

# Bumped whenever the same seed would give different events (caches of generated data key on it).
GENERATOR_VERSION = 2

_BOUNCE = 0.35          # share of single-event sessions
_TRAVEL = 0.03          # share of sessions from another place of the user's country (trips, GeoIP noise)
_MAX_SESSION = 50       # events per session at most
_FILE_EVENTS = 100_000  # default events per landing file

_NAME_RE = re.compile(r"^events-(\d+)\.ndjson$")


@dataclass(slots=True)
class _User:
    user_id: str
    country: str
    region: str
    city: str
    platforms: tuple[str, ...]   # primary first; ~20% of users have a second one
    devices: dict[str, str]      # a user keeps their device per platform


@dataclass(slots=True)
class _Session:  # what a late file needs to append to a session already written
    session_id: str
    user: _User
    platform: str
    device: str
    country: str
    region: str
    city: str
    first_ts: int
    last_ts: int
    n: int = 0  # events written so far


class _Writer:
    """Writes lines into numbered files; each appears whole (``.tmp`` then rename)."""

    def __init__(self, out: Path, first_number: int) -> None:
        self.out, self.number = out, first_number
        self.paths: list[Path] = []
        self._fh = None
        self._tmp: Path | None = None

    def open(self) -> None:
        self.close()
        final = self.out / f"events-{self.number:04d}.ndjson"
        self.number += 1
        # The landing folder ignores '*.tmp': the file only appears, whole, on rename.
        self._tmp = final.with_name(final.name + ".tmp")
        self._fh = open(self._tmp, "wb", buffering=1 << 20)
        self.paths.append(final)

    def write(self, line: bytes) -> None:
        self._fh.write(line)

    def close(self) -> None:
        if self._fh is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.paths[-1])
        self._fh = self._tmp = None

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._fh = self._tmp = None


class _Generator:
    def __init__(self, rng: random.Random, n_users: int, start: int, end: int) -> None:
        self.rng, self.start, self.end = rng, start, end
        # Zipf-like activity: rank r gets weight 1/(r+k), with a long tail of one-visit
        # users. k grows with the population (3..20) so that at a million events the top
        # users stay under 1% of sessions each, while small sets still have heavy users.
        k = min(20, max(3, n_users // 2500))
        self.user_cum = list(itertools.accumulate(1 / (r + k) for r in range(n_users)))
        self.users: dict[int, _User] = {}
        self._day_cache: dict[int, str] = {}

    # -- entities ---------------------------------------------------------------------------
    def user(self) -> _User:
        rng = self.rng
        rank = bisect_right(self.user_cum, rng.random() * self.user_cum[-1])
        u = self.users.get(rank)
        if u is None:
            country = _COUNTRIES[bisect_right(_COUNTRY_CUM, rng.random() * _COUNTRY_CUM[-1])]
            region, city = rng.choice(GEO[country][1])
            if rng.random() < 0.01:  # unknown geography (no GeoIP match)
                country = region = city = ""
            elif rng.random() < 0.03:  # country known, city not
                city = ""
            primary = PLATFORMS[bisect_right(_PLATFORM_CUM, rng.random() * _PLATFORM_CUM[-1])]
            platforms = (primary,)
            if rng.random() < 0.2:
                platforms += (rng.choice([p for p in PLATFORMS if p != primary]),)
            devices = {}
            for p in platforms:
                names, cum = _DEVICES[p]
                devices[p] = names[bisect_right(cum, rng.random() * cum[-1])]
            # Ids look like a tracker's (opaque), but stay deterministic through the rng.
            u = _User(f"u_{rng.getrandbits(40):010x}", country, region, city, platforms, devices)
            self.users[rank] = u
        return u

    def session(self, start_ts: int) -> tuple[_Session, list[tuple]]:
        """One session starting at ``start_ts``: its events as row tuples (ts first)."""
        rng = self.rng
        u = self.user()
        platform = u.platforms[0]
        if len(u.platforms) > 1 and rng.random() < 0.3:
            platform = u.platforms[1]
        device = u.devices[platform]
        if rng.random() < 0.01:  # an old SDK that sends no platform
            platform = ""
        if rng.random() < 0.005:
            device = ""
        country, region, city = u.country, u.region, u.city
        if country and rng.random() < _TRAVEL:  # away from home: another place of the same country
            region, city = rng.choice(GEO[country][1])
        s = _Session(f"s_{rng.getrandbits(64):016x}", u, platform, device, country, region, city, start_ts, start_ts)
        if rng.random() < _BOUNCE:
            n = 1
        else:  # geometric-ish tail: mean ~6, a few long ones
            n = min(_MAX_SESSION, 2 + int(rng.expovariate(1 / 4)))
        rows = []
        ts = start_ts
        for i in range(n):
            if i:
                # seconds to minutes between events; now and then the user idles
                ts += 1 + int(rng.expovariate(1 / 40 if rng.random() < 0.95 else 1 / 600))
            if ts >= self.end:
                break
            rows.append(self.row(s, ts, first=i == 0))
        s.last_ts, s.n = (rows[-1][0] if rows else start_ts), len(rows)
        return s, rows

    def row(self, s: _Session, ts: int, first: bool) -> tuple:
        rng = self.rng
        if first:
            et = "page_view" if rng.random() < 0.85 else rng.choice(("login", "signup", "search"))
        else:
            et = _ET_NAMES[bisect_right(_ET_CUM, rng.random() * _ET_CUM[-1])]
        duration = min(600, int(rng.expovariate(1 / _ET_MEAN[et])))
        if et in ("add_to_cart", "purchase") or (et == "page_view" and rng.random() < 0.3):
            page = f"/products/{int(rng.paretovariate(1.2)) % _N_PRODUCTS}"
        elif et == "signup":
            page = "/signup"
        else:
            page = _PAGES[bisect_right(_PAGES_CUM, rng.random() * _PAGES_CUM[-1])]
        return (ts, s.user.user_id, et, s.session_id, duration, s.device, s.platform, page,
                s.country, s.region, s.city)

    # -- serialisation -------------------------------------------------------------------------
    def _fmt(self, ts: int, sep: str) -> str:
        day, sec = divmod(ts, 86400)
        d = self._day_cache.get(day)
        if d is None:
            d = self._day_cache[day] = (date(1970, 1, 1) + timedelta(days=day)).isoformat()
        h, rem = divmod(sec, 3600)
        m, s = divmod(rem, 60)
        return f"{d}{sep}{h:02d}:{m:02d}:{s:02d}"

    def encode(self, r: tuple) -> bytes:
        """A row as one NDJSON line, in a mix of the accepted timestamp/duration forms."""
        rng = self.rng
        ts = r[0]
        x = rng.random()
        if x < _P_ISO_Z:
            when: str | int = self._fmt(ts, " ")
        elif x < _P_OFFSET:  # ISO with Z, sometimes with a fraction (truncated on load)
            frac = f".{rng.randrange(1000):03d}" if rng.random() < 0.5 else ""
            when = f"{self._fmt(ts, 'T')}{frac}Z"
        elif x < _P_EPOCH:  # the same instant as local time with an offset
            suffix, off = _OFFSETS[rng.randrange(len(_OFFSETS))]
            when = self._fmt(ts + off, "T") + suffix
        else:
            when = ts
        duration: int | str = r[4]
        if rng.random() < 0.05:
            duration = f"{duration:04d}"  # some SDKs send zero-padded strings
        return orjson.dumps({
            "timestamp": when, "user_id": r[1], "event_type": r[2], "session_id": r[3],
            "duration": duration, "device": r[5], "platform": r[6], "page": r[7],
            "country": r[8], "region": r[9], "city": r[10],
        }) + b"\n"

    def bad_line(self, r: tuple) -> bytes:
        """An invalid line of one of the kinds the contract quarantines, built from a real row."""
        good = orjson.loads(self.encode(r))
        kind = self.rng.randrange(9)
        if kind == 0:
            raw = orjson.dumps(good)
            return raw[: len(raw) // 2] + b"\n"  # truncated: bad JSON
        if kind == 1:
            return orjson.dumps(list(good.values())) + b"\n"  # not an object
        if kind == 2:
            del good["user_id"]
        else:
            field, value = {
                3: ("session_id", ""), 4: ("timestamp", "not-a-date"),
                5: ("timestamp", "2025-02-30 10:00:00"), 6: ("duration", 3.5),
                7: ("duration", "-5"), 8: ("duration", True),
            }[kind]
            good[field] = value
        return orjson.dumps(good) + b"\n"


def _next_number(out: Path) -> int:
    """Continue the numbering of files already in ``out`` instead of overwriting them."""
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := _NAME_RE.match(p.name))]
    return max(numbers, default=0) + 1


def generate(
    events: int,
    days: int = 30,
    seed: int = 0,
    out: Path | str | None = None,
    end: datetime | None = None,
    bad_rows: float = 0.0,
    late_files: int = 0,
    files: int | None = None,
    progress: bool = False,
) -> dict:
    """Write ``events`` valid synthetic events as ``events-NNNN.ndjson`` files in ``out``.

    Events span ``[end - days, end)``; ``end`` defaults to now, UTC, truncated to the hour.
    ``files`` main files (default: one per 100,000 events) hold the events in time order;
    ``late_files`` more files then hold ~5% of the events with older timestamps, half of
    them appended to sessions already written. ``round(events * bad_rows)`` invalid lines
    are mixed in on top of the valid events. Returns a summary::

        {"files": int, "paths": [str], "events": int, "bad_rows": int,
         "late_events": int, "users": int, "sessions": int, "start": str, "end": str}
    """
    if out is None:
        raise TypeError("generate() needs out, the landing folder to write into")
    if events < 0 or days < 1 or late_files < 0 or not 0 <= bad_rows <= 1:
        raise ValueError("need events >= 0, days >= 1, late_files >= 0, 0 <= bad_rows <= 1")
    if end is None:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        end = end.replace(tzinfo=UTC)  # naive means UTC, as everywhere in engage
    end_ts = int(end.timestamp())
    start_ts = end_ts - days * 86400
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    rng = random.Random(seed)
    gen = _Generator(rng, max(1, events // 20), start_ts, end_ts)

    late_total = min(events, max(late_files, round(events * 0.05))) if late_files else 0
    main_total = events - late_total
    n_main = 0 if main_total == 0 else max(1, min(main_total, files or -(-main_total // _FILE_EVENTS)))
    n_late = min(late_files, late_total)

    # Bad lines go before randomly chosen valid events (several may share one).
    n_bad = round(events * bad_rows) if events else 0
    bad_at = Counter(rng.randrange(events) for _ in range(n_bad))

    # Valid-event index at which each file starts: equal shares, main files then late ones.
    starts = [i * main_total // n_main for i in range(n_main)]
    starts += [main_total + j * late_total // n_late for j in range(n_late)]
    writer = _Writer(out, _next_number(out))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=events, unit="ev", unit_scale=True, desc="generate")

    written = 0
    next_file = 0

    def emit(rows: list[tuple]) -> None:
        nonlocal written, next_file
        for r in rows:
            while next_file < len(starts) and starts[next_file] == written:
                writer.open()
                next_file += 1
            for _ in range(bad_at.get(written, 0)):
                writer.write(gen.bad_line(r))
            writer.write(gen.encode(r))
            written += 1
        if bar is not None:
            bar.update(len(rows))

    # Reservoir of sessions that late files may extend (uniform over all sessions).
    reservoir: list[_Session] = []
    seen_sessions = 0
    try:
        # --- main files: hour by hour, each hour's quota weighted by the daily cycle ----------
        hours = days * 24
        first_hour = start_ts // 3600
        cum = list(itertools.accumulate(_HOUR_WEIGHT[(first_hour + k) % 24] for k in range(hours)))
        generated = 0
        pending: list[tuple] = []  # rows of sessions running past the current hour
        for k in range(hours):
            h0 = start_ts + k * 3600
            h1 = h0 + 3600
            target = main_total if k == hours - 1 else round(main_total * cum[k] / cum[-1])
            fresh: list[tuple] = []
            while generated < target:
                s, rows = gen.session(h0 + rng.randrange(3600))
                if not rows:
                    continue
                rows = rows[: main_total - generated]  # never more than asked for
                s.last_ts, s.n = rows[-1][0], len(rows)
                generated += len(rows)
                fresh.extend(rows)
                seen_sessions += 1
                if late_total:
                    if len(reservoir) < 1000:
                        reservoir.append(s)
                    elif (j := rng.randrange(seen_sessions)) < 1000:
                        reservoir[j] = s
            pending.extend(fresh)
            due = [r for r in pending if r[0] < h1]
            pending = [r for r in pending if r[0] >= h1]
            due.sort(key=lambda r: r[0])  # stable: a session's events keep their order
            emit(due)
        pending.sort(key=lambda r: r[0])
        emit(pending)

        # --- late files: older timestamps, arriving after the newer files -------------------
        late_rows: list[tuple] = []
        # "Older days": before the last day (the first half of a one-day range).
        old_end = end_ts - 86400 if days > 1 else start_ts + 43200
        tries = 0
        while len(late_rows) < late_total:
            # The first late event extends a written session (if one can be, within a few
            # tries), then half of them do.
            if reservoir and (rng.random() < 0.5 or (not late_rows and tries < 100)):
                # More events of a session already written: after its end, or (sometimes)
                # before its start, which moves the session's start and first event.
                tries += 1
                s = rng.choice(reservoir)
                for _ in range(min(rng.randint(1, 3), _MAX_SESSION - s.n)):
                    if rng.random() < 0.15:
                        ts = s.first_ts - 1 - rng.randrange(120)
                        s.first_ts = max(ts, start_ts)
                    else:
                        ts = s.last_ts + 1 + rng.randrange(300)
                        s.last_ts = min(ts, end_ts - 1)
                    if start_ts <= ts < end_ts and len(late_rows) < late_total:
                        late_rows.append(gen.row(s, ts, first=False))
                        s.n += 1
            else:
                _, rows = gen.session(start_ts + rng.randrange(old_end - start_ts))
                seen_sessions += 1
                late_rows.extend(rows[: late_total - len(late_rows)])
        emit(late_rows)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()

    return {
        "files": len(writer.paths),
        "paths": [str(p) for p in writer.paths],
        "events": written,
        "bad_rows": n_bad,
        "late_events": late_total,
        "users": len(gen.users),
        "sessions": seen_sessions,
        "start": datetime.fromtimestamp(start_ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "end": datetime.fromtimestamp(end_ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }
