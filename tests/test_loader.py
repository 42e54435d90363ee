"""The loader: every format, every kind of bad row, exactly-once, crash safety."""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import oracle_table
from edge_data import FIELDS, edge_case_events

from engage.loader import connect_warehouse, load_pending

EVENTS = edge_case_events(seed=11, n_events=600)


def raw_rows(settings) -> list[tuple]:
    con = connect_warehouse(settings)
    try:
        return sorted(con.execute(f"SELECT {', '.join(FIELDS)} FROM raw.user_events").fetchall(), key=repr)
    finally:
        con.close()


def expected_rows(events) -> list[tuple]:
    con = duckdb.connect()
    oracle_table(con, events)
    return sorted(con.execute(f"SELECT {', '.join(FIELDS)} FROM user_events").fetchall(), key=repr)


def quarantine(settings) -> list[tuple]:
    con = connect_warehouse(settings)
    try:
        return con.execute(
            "SELECT source, line_number, raw_text, error FROM raw.user_events_quarantine ORDER BY source, line_number"
        ).fetchall()
    finally:
        con.close()


def ndjson_bytes(events) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def csv_bytes(events, crlf=True) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FIELDS) + ["extra"], lineterminator="\r\n" if crlf else "\n")
    writer.writeheader()
    for e in events:
        writer.writerow({**e, "extra": "ignored"})
    return buf.getvalue().encode()


def parquet_file(path: Path, events) -> None:
    cols = {f: [e[f] for e in events] for f in FIELDS}
    # Native timestamps (taken as UTC), the other columns as they are.
    cols["timestamp"] = pa.array(
        [datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in cols["timestamp"]], pa.timestamp("us")
    )
    pq.write_table(pa.table(cols), path)


WRITERS = {
    "events.ndjson": lambda p, ev: p.write_bytes(ndjson_bytes(ev)),
    "events.jsonl": lambda p, ev: p.write_bytes(ndjson_bytes(ev).replace(b"\n", b"\r\n")),
    "events.json": lambda p, ev: p.write_bytes(b"\n" + ndjson_bytes(ev) + b"\n\r\n  \n"),
    "events.ndjson.gz": lambda p, ev: p.write_bytes(gzip.compress(ndjson_bytes(ev))),
    "events.csv": lambda p, ev: p.write_bytes(csv_bytes(ev)),
    "events.csv.gz": lambda p, ev: p.write_bytes(gzip.compress(csv_bytes(ev, crlf=False))),
    "events.parquet": parquet_file,
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_format_loads_exactly_the_events(engage_home, name):
    WRITERS[name](engage_home.landing / name, EVENTS)
    summary = load_pending(engage_home)
    assert summary.rows_quarantined == 0, quarantine(engage_home)[:3]
    assert summary.rows_loaded == len(EVENTS)
    assert raw_rows(engage_home) == expected_rows(EVENTS)


def test_files_being_written_and_other_types_are_ignored(engage_home):
    for name in (".hidden.ndjson", "upload.ndjson.tmp", "upload.ndjson.part", "notes.txt", "data.xml"):
        (engage_home.landing / name).write_bytes(ndjson_bytes(EVENTS[:5]))
    assert load_pending(engage_home).files == []
    os.replace(engage_home.landing / "upload.ndjson.tmp", engage_home.landing / "upload.ndjson")
    assert load_pending(engage_home).rows_loaded == 5


def test_timestamp_forms_and_defaults():
    from engage.validate import Dialect, split_lines, validate

    lines = [
        {"timestamp": "2025-01-15 10:30:45", "user_id": "u", "event_type": "e", "session_id": "s"},
        {"timestamp": "2025-01-15T10:30:45.123456789Z", "user_id": "u", "event_type": "e", "session_id": "s", "duration": "0042"},
        {"timestamp": "2025-01-15T16:15:45+05:45", "user_id": "u", "event_type": "e", "session_id": "s", "platform": None},
        {"timestamp": "2025-01-15T07:00:45-03:30", "user_id": "u", "event_type": "e", "session_id": "s", "unknown": [1]},
        {"timestamp": int(datetime(2025, 1, 15, 10, 30, 45, tzinfo=timezone.utc).timestamp()), "user_id": "u",
         "event_type": "e", "session_id": "s", "duration": 7},
    ]
    batch, _ = split_lines(ndjson_bytes(lines))
    rows = validate(duckdb.connect(), batch, Dialect.JSON).fetchall()
    assert [r[2] for r in rows] == [None] * 5
    expected_ts = [datetime(2025, 1, 15, 10, 30, 45), datetime(2025, 1, 15, 10, 30, 45),
                   datetime(2025, 1, 15, 10, 30, 45), datetime(2025, 1, 15, 10, 30, 45),
                   datetime(2025, 1, 15, 10, 30, 45)]
    assert [r[3] for r in rows] == expected_ts
    assert [r[7] for r in rows] == [0, 42, 0, 0, 7]
    assert rows[2][9] == ""  # null platform is its default


GOOD = '{"timestamp":"2025-01-15 10:30:45","user_id":"u1","event_type":"click","session_id":"s1"}'
# (line, the field the error must name)
BAD_JSON_LINES = [
    ('{"timestamp":"2025-01-15 10:30:45","user_id":', "invalid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('"just a string"', "JSON object"),
    ('{"timestamp":"2025-01-15 10:30:45","event_type":"click","session_id":"s1"}', "user_id"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"","event_type":"click","session_id":"s1"}', "user_id"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","session_id":"s1"}', "event_type"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":null}', "session_id"),
    ('{"user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":"not a date","user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":"2025-02-30 10:00:00","user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":"2025-01-15 25:00:00","user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":"2025-1-5 10:00:00","user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":"2025-01-15T10:00:00+25:00","user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":1.5e9,"user_id":"u","event_type":"click","session_id":"s1"}', "timestamp"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","duration":3.5}', "duration"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","duration":"1e3"}', "duration"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","duration":"-5"}', "duration"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","duration":-5}', "duration"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","duration":true}', "duration"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","duration":4294967296}', "duration"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","city":{"a":1}}', "city"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"u","event_type":"click","session_id":"s1","platform":true}', "platform"),
    ('{"timestamp":"2025-01-15 10:30:45","user_id":"' + "x" * 70000 + '","event_type":"c","session_id":"s"}', "byte"),
]


def test_every_bad_row_is_quarantined_with_its_reason(engage_home):
    lines = []
    for line, _ in BAD_JSON_LINES:
        lines += [GOOD, line]
    data = ("\n".join(lines)).encode() + b"\n\n\r\n" + b'{"timestamp":"2025-01-15 10:30:45","user_id":"\xff","event_type":"c","session_id":"s"}' + b"\n" + GOOD.encode()  # last line: no newline
    (engage_home.landing / "mixed.ndjson").write_bytes(data)
    summary = load_pending(engage_home)
    non_blank_rows = 2 * len(BAD_JSON_LINES) + 2
    assert summary.rows_loaded + summary.rows_quarantined == non_blank_rows
    assert summary.rows_loaded == len(BAD_JSON_LINES) + 1
    rows = quarantine(engage_home)
    assert len(rows) == len(BAD_JSON_LINES) + 1
    for (source, line_no, raw_text, error), (line, field) in zip(rows, BAD_JSON_LINES):
        assert source == "mixed.ndjson"
        assert data.split(b"\n")[line_no - 1].decode() == line  # line numbers are 1-based, exact
        assert raw_text == line
        assert field in error, (line[:80], error)
    assert "UTF-8" in rows[-1][3] and rows[-1][1] == len(lines) + 3  # after two blank lines


def test_csv_bad_rows_and_quoted_fields(engage_home):
    text = (
        "timestamp,user_id,event_type,session_id,duration,city\r\n"
        '2025-01-15 10:30:45,u1,click,s1,,"Zürich, ""old town""\r\nsecond line"\r\n'
        "1700000000,u2,click,s2,5,\r\n"
        "2025-01-15 10:30:45,,click,s3,5,\r\n"
        "2025-01-15 10:30:45,u4,click,s4,3.5,\r\n"
        "\r\n"
        "2025-01-15 10:30:45,u5,click,s5,0042,Paris\r\n"
    )
    (engage_home.landing / "a.csv").write_text(text, encoding="utf-8", newline="")
    summary = load_pending(engage_home)
    assert (summary.rows_loaded, summary.rows_quarantined) == (2, 3)
    rows = quarantine(engage_home)
    assert [(r[1], r[3].split(":")[0]) for r in rows] == [(4, "timestamp"), (5, "user_id"), (6, "duration")]
    assert rows[0][2] == "1700000000,u2,click,s2,5,"
    loaded = raw_rows(engage_home)
    assert {(r[1], r[4], r[10]) for r in loaded} == {("u1", 0, 'Zürich, "old town"\r\nsecond line'), ("u5", 42, "Paris")}


def test_parquet_null_required_and_wrong_schema(engage_home):
    pq.write_table(
        pa.table({"timestamp": pa.array([datetime(2025, 1, 1, 0, 0, 1, 999999), None], pa.timestamp("us", "UTC")),
                  "user_id": ["u", "u"], "event_type": ["e", "e"], "session_id": ["s", None], "duration": [1, None]}),
        engage_home.landing / "ok.parquet",
    )
    pq.write_table(pa.table({"ts": [1, 2], "who": ["a", "b"]}), engage_home.landing / "wrong.parquet")
    summary = load_pending(engage_home)
    assert summary.rows_loaded == 1 and summary.rows_quarantined == 3
    assert raw_rows(engage_home)[0][0] == datetime(2025, 1, 1, 0, 0, 1)  # truncated to the second
    errors = [r[3] for r in quarantine(engage_home)]
    assert errors[0].startswith("timestamp") and all(e.startswith("timestamp") for e in errors[1:])


def test_truncated_gzip_loads_nothing_and_says_why(engage_home):
    whole = gzip.compress(ndjson_bytes(EVENTS))
    (engage_home.landing / "cut.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    (engage_home.landing / "fine.ndjson").write_bytes(ndjson_bytes(EVENTS[:10]))
    summary = load_pending(engage_home)
    cut = next(f for f in summary.files if f.name == "cut.ndjson.gz")
    assert cut.status == "unreadable" and cut.rows_loaded == 0 and cut.rows_quarantined >= 1
    assert summary.rows_loaded == 10  # the other file of the run still loads
    assert all("cannot be read to its end" in r[3] for r in quarantine(engage_home))


def test_same_content_under_another_name_loads_nothing(engage_home):
    (engage_home.landing / "a.ndjson").write_bytes(ndjson_bytes(EVENTS))
    assert load_pending(engage_home).rows_loaded == len(EVENTS)
    (engage_home.landing / "sub").mkdir()
    shutil.copy(engage_home.landing / "a.ndjson", engage_home.landing / "sub" / "b.ndjson")
    again = load_pending(engage_home)
    assert [f.status for f in again.files] == ["duplicate"]
    assert len(raw_rows(engage_home)) == len(EVENTS)
    assert load_pending(engage_home).files == []  # nothing pending any more


def _load_in_subprocess(home: Path, fault: str | None) -> int:
    env = {**os.environ, "ENGAGE_HOME": str(home)}
    if fault:
        env["ENGAGE_FAULT"] = fault
    code = "from engage.settings import Settings; from engage.loader import load_pending; load_pending(Settings())"
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode


def test_crash_between_rows_and_ledger_leaves_nothing_then_loads_once(engage_home):
    (engage_home.landing / "a.ndjson").write_bytes(ndjson_bytes(EVENTS[:300]))
    (engage_home.landing / "b.ndjson").write_bytes(b"not json\n" + ndjson_bytes(EVENTS[300:]))
    # The process dies (like kill -9) after writing a file's rows, before its ledger row commits.
    assert _load_in_subprocess(engage_home.home_dir, "load_before_commit") == 137
    con = duckdb.connect(str(engage_home.warehouse_path))
    assert con.execute("SELECT count(*) FROM raw.user_events").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM raw.user_events_quarantine").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM raw.loaded_files").fetchall() == [(0,)]
    con.close()
    assert _load_in_subprocess(engage_home.home_dir, None) == 0
    assert raw_rows(engage_home) == expected_rows(EVENTS)
    assert len(quarantine(engage_home)) == 1
    assert _load_in_subprocess(engage_home.home_dir, None) == 0
    assert len(raw_rows(engage_home)) == len(EVENTS)
