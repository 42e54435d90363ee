"""engage.generate: deterministic, contract-valid, realistic landing files (and the edge-case helper)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from engage.generate import GEO, generate

try:  # tests/ is on sys.path (rootdir-less layout) or a package
    from edge_data import edge_case_events, split_into_files, write_ndjson
except ImportError:  # pragma: no cover
    from tests.edge_data import edge_case_events, split_into_files, write_ndjson

END = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)  # a Monday; the range spans a month boundary
DAYS = 5
PLAIN = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def parse_ts(v) -> tuple[str, datetime] | None:
    """(form, UTC datetime) of an accepted timestamp, else None — an independent parser."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return "epoch", datetime.fromtimestamp(v, UTC)
    if not isinstance(v, str):
        return None
    try:
        if PLAIN.match(v):
            return "plain", datetime.strptime(v, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        if ISO.match(v):
            form = "iso_z" if v.endswith("Z") else "iso_offset"
            return form, datetime.fromisoformat(v).astimezone(UTC).replace(microsecond=0)
    except ValueError:
        return None
    return None


def check_line(line: bytes) -> dict | None:
    """The event with ``ts``/``ts_form``/``duration`` normalised if valid per the contract, else None."""
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(d, dict):
        return None
    for f in ("user_id", "event_type", "session_id"):
        if not isinstance(d.get(f), str) or not d[f]:
            return None
    parsed = parse_ts(d.get("timestamp"))
    if parsed is None:
        return None
    dur = d.get("duration", 0)
    ok_int = isinstance(dur, int) and not isinstance(dur, bool) and 0 <= dur < 2**32
    ok_str = isinstance(dur, str) and dur.isascii() and dur.isdigit()
    if not (ok_int or ok_str):
        return None
    for f in ("device", "platform", "page", "country", "region", "city"):
        if not isinstance(d.get(f, ""), str):
            return None
    d["ts_form"], d["ts"] = parsed
    d["duration_raw"], d["duration"] = dur, int(dur)
    return d


def read_dir(path: Path) -> tuple[dict[str, list[dict]], int]:
    """Valid events per file name, and the number of invalid lines."""
    valid: dict[str, list[dict]] = {}
    bad = 0
    for p in sorted(path.iterdir()):
        rows = []
        for line in p.read_bytes().splitlines():
            if not line.strip():
                continue
            ev = check_line(line)
            if ev is None:
                bad += 1
            else:
                rows.append(ev)
        valid[p.name] = rows
    return valid, bad


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("landing")
    summary = generate(4000, days=DAYS, seed=7, out=out, end=END, bad_rows=0.02,
                       late_files=2, files=3)
    return out, summary


def test_deterministic_for_seed_and_end(tmp_path):
    a = generate(1500, days=3, seed=3, out=tmp_path / "a", end=END, bad_rows=0.01, late_files=1)
    b = generate(1500, days=3, seed=3, out=tmp_path / "b", end=END, bad_rows=0.01, late_files=1)
    c = generate(1500, days=3, seed=4, out=tmp_path / "c", end=END, bad_rows=0.01, late_files=1)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert {k: v for k, v in a.items() if k != "paths"} == {k: v for k, v in b.items() if k != "paths"}
    assert c["events"] == a["events"]
    assert (tmp_path / "a" / names[0]).read_bytes() != (tmp_path / "c" / names[0]).read_bytes()


def test_every_valid_line_passes_the_contract_and_bad_lines_match(landing):
    out, summary = landing
    assert not list(out.glob("*.tmp")) and all(p.suffix == ".ndjson" for p in out.iterdir())
    assert summary["files"] == 5 == len(list(out.iterdir()))  # 3 main + 2 late
    valid, bad = read_dir(out)
    assert bad == summary["bad_rows"] == round(4000 * 0.02)
    assert sum(map(len, valid.values())) == summary["events"] == 4000
    lo, hi = END - timedelta(days=DAYS), END
    events = [e for rows in valid.values() for e in rows]
    assert all(lo <= e["ts"] < hi for e in events)
    assert all(0 <= e["duration"] <= 600 for e in events)
    # every accepted timestamp form and zero-padded duration strings occur
    assert set(Counter(e["ts_form"] for e in events)) == {"plain", "iso_z", "iso_offset", "epoch"}
    assert Counter(e["ts_form"] for e in events).most_common(1)[0][0] == "plain"
    assert any(isinstance(e["duration_raw"], str) and e["duration_raw"].startswith("0")
               and e["duration"] > 0 for e in events)


def test_main_files_are_in_time_order_so_offsets_were_converted(landing):
    # Main files are written in true time order: a wrongly converted '+02:00' or epoch
    # value would show up as a step backwards.
    out, summary = landing
    valid, _ = read_dir(out)
    main = [Path(p).name for p in summary["paths"][:3]]
    ts = [e["ts"] for name in main for e in valid[name]]
    assert ts == sorted(ts)


def test_bad_lines_are_of_several_contract_kinds(landing):
    out, _ = landing
    kinds = Counter()
    for p in out.iterdir():
        for line in p.read_bytes().splitlines():
            if check_line(line) is not None:
                continue
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                kinds["bad_json"] += 1
                continue
            if not isinstance(d, dict):
                kinds["not_object"] += 1
            elif "user_id" not in d:
                kinds["missing_user_id"] += 1
            elif d["session_id"] == "":
                kinds["empty_session"] += 1
            elif d["timestamp"] in ("not-a-date", "2025-02-30 10:00:00"):
                kinds["timestamp"] += 1
            else:
                assert d["duration"] in (3.5, "-5", True)
                kinds["duration"] += 1
    assert len(kinds) >= 5, kinds


def test_realistic_shape(landing):
    out, summary = landing
    valid, _ = read_dir(out)
    events = [e for rows in valid.values() for e in rows]
    sessions: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        sessions[e["session_id"]].append(e)
    sizes = Counter(len(v) for v in sessions.values())
    assert sizes[1] > 0 and any(n > 5 for n in sizes)
    assert 0.2 < sizes[1] / len(sessions) < 0.5  # bounces
    assert max(sizes) <= 50
    # some sessions cross an hour boundary
    assert any(len({e["ts"].replace(minute=0, second=0) for e in v}) > 1 for v in sessions.values())
    platforms = Counter(e["platform"] for e in events)
    assert {"web", "ios", "android"} <= set(platforms)
    per_user = defaultdict(set)
    for e in events:
        per_user[e["user_id"]].add(e["platform"])
    assert any(len(p) > 1 for p in per_user.values())
    # a few heavy users, a long tail
    activity = sorted(Counter(e["user_id"] for e in events).values(), reverse=True)
    assert activity[0] >= 10 * activity[len(activity) // 2]
    # places are consistent with their country, and unicode ones occur
    for e in events:
        if e["country"]:
            assert (e["region"], e["city"]) in GEO[e["country"]][1] or (
                e["city"] == "" and any(r == e["region"] for r, _ in GEO[e["country"]][1]))
    assert any(not e["city"].isascii() for e in events)
    assert {"desktop", "mobile", "tablet"} <= {e["device"] for e in events}
    assert {"page_view", "click", "purchase"} <= {e["event_type"] for e in events}
    # daily cycle: afternoon UTC busier than the small hours
    hours = Counter(e["ts"].hour for e in events)
    assert sum(hours[h] for h in range(12, 18)) > 2 * sum(hours[h] for h in range(0, 6))


def test_late_files_hold_older_events_of_known_sessions(landing):
    out, summary = landing
    valid, _ = read_dir(out)
    names = [Path(p).name for p in summary["paths"]]
    main, late = names[:3], names[3:]
    main_sessions = {e["session_id"] for n in main for e in valid[n]}
    late_events = [e for n in late for e in valid[n]]
    assert len(late_events) == summary["late_events"] > 0
    newest_main = max(e["ts"] for n in main for e in valid[n])
    assert min(e["ts"] for e in late_events) < newest_main - timedelta(days=1)
    assert any(e["session_id"] in main_sessions for e in late_events)


def test_files_are_added_not_overwritten(tmp_path):
    first = generate(200, days=1, seed=1, out=tmp_path, end=END)
    second = generate(200, days=1, seed=2, out=tmp_path, end=END, files=2)
    assert [Path(p).name for p in first["paths"]] == ["events-0001.ndjson"]
    assert [Path(p).name for p in second["paths"]] == ["events-0002.ndjson", "events-0003.ndjson"]


def test_progress_bar_and_edge_sizes(tmp_path):
    assert generate(0, out=tmp_path / "empty", end=END)["files"] == 0
    s = generate(10, days=1, out=tmp_path / "tiny", end=END, late_files=3, bad_rows=0.5, progress=True)
    valid, bad = read_dir(tmp_path / "tiny")
    assert s["events"] == sum(map(len, valid.values())) == 10 and bad == s["bad_rows"] == 5
    with pytest.raises(ValueError):
        generate(10, out=tmp_path, bad_rows=2)


# --- tests/edge_data.py: make sure the hard cases really are in there ---------------------------

def test_edge_case_events_cover_the_hard_cases(tmp_path):
    events = edge_case_events(seed=1)
    assert len(events) == 3000 and edge_case_events(seed=1) == events
    fields = {"timestamp", "user_id", "event_type", "session_id", "duration", "device",
              "platform", "page", "country", "region", "city"}
    assert all(set(e) == fields and check_line(orjson.dumps(e)) for e in events)
    assert all(PLAIN.match(e["timestamp"]) for e in events)
    by_session = defaultdict(list)
    for e in events:
        by_session[e["session_id"]].append(datetime.strptime(e["timestamp"], "%Y-%m-%d %H:%M:%S"))

    def crosses(unit) -> bool:
        return any(len({unit(t) for t in ts}) > 1 and max(ts) - min(ts) < timedelta(hours=1)
                   for ts in by_session.values())

    assert crosses(lambda t: (t.year, t.month))       # month boundary
    assert crosses(lambda t: t.isocalendar()[:2])     # ISO week boundary
    assert crosses(lambda t: t.date())                # day boundary
    # ties on a session's earliest timestamp with different platform/device/country
    ties = 0
    for sid, ts in by_session.items():
        first = [e for e in events if e["session_id"] == sid and
                 datetime.strptime(e["timestamp"], "%Y-%m-%d %H:%M:%S") == min(ts)]
        if len({(e["platform"], e["device"], e["country"]) for e in first}) > 1:
            ties += 1
    assert ties >= 3
    keys = Counter(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events)
    assert max(keys.values()) >= 2                    # exact duplicates
    assert {"web", "Web", ""} <= {e["platform"] for e in events}
    assert any(e["duration"] == 0 for e in events)
    assert any(e["city"] == "" and e["country"] == "" for e in events)
    assert any(not e["city"].isascii() for e in events)
    years = {e["timestamp"][:4] for e in events}
    assert "1970" in years and "2099" in years

    files = split_into_files(events, seed=2, n_files=6)
    assert len(files) == 6 and all(files)
    assert sorted(map(orjson.dumps, (e for f in files for e in f))) == sorted(map(orjson.dumps, events))
    assert len({orjson.dumps(f) for f in files}) == 6
    first_file = [e["timestamp"] for e in files[0]]
    assert first_file != sorted(first_file)           # not in time order
    path = write_ndjson(tmp_path / "x" / "a.ndjson", files[0])
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == files[0]
    assert not list((tmp_path / "x").glob("*.tmp"))
