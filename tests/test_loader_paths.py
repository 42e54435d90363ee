"""The loader's paths give the same rows, the same quarantine and the same line numbers.

The whole-file path (DuckDB's NDJSON reader over a file whose every line is an object, kept only
when every line is a valid row) and the fast path (NDJSON blocks of valid UTF-8 as Arrow lines, validated and inserted inside DuckDB)
is compared with the exact path (the whole file split line by line in Python, validated from a
LineBatch as the Events API does), on generated files with bad rows mixed in. Each test checks
which path ran from the loader's own counts (``whole_file_lines``/``fast_lines``/``exact_lines``,
also logged), so a
change that silently sends everything down one path fails.

Some tests shrink the block and group sizes (module constants of engage.landing) so that a file
of a few thousand lines spans many blocks and groups: the same code at a smaller scale.
"""

from __future__ import annotations

import gzip
import logging
import random

import duckdb
import orjson
import pytest
from conftest import oracle_table
from edge_data import FIELDS, edge_case_events
from test_loader import BAD_JSON_LINES, GOOD

from engage import landing
from engage.loader import connect_warehouse, load_pending, validated
from engage.validate import Dialect, split_lines


def event_lines(seed: int, n: int) -> list[bytes]:
    return [orjson.dumps(e) for e in edge_case_events(seed=seed, n_events=n)]


def mixed_content(seed: int, n: int, invalid_utf8_every: int | None) -> bytes:
    """Events with every kind of bad line mixed in: invalid JSON, wrong types, missing fields, a
    line over 64 KiB, blank lines, CRLF endings, a BOM, no final newline; and, when asked, a line
    of invalid UTF-8 every `invalid_utf8_every` lines (its block takes the exact path)."""
    rng = random.Random(seed)
    lines = event_lines(seed, n)
    bad = [line.encode() for line, _ in BAD_JSON_LINES] + [b"", b"   ", b"\r", b"\t\t", GOOD.encode() + b"\r"]
    for _ in range(n // 20):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(bad))
    if invalid_utf8_every:
        for i in range(invalid_utf8_every // 2, len(lines), invalid_utf8_every):
            lines[i] = lines[i].replace(b'"user_id":"', b'"user_id":"\xff', 1)
    ended = [line + (b"\r\n" if rng.random() < 0.1 else b"\n") for line in lines]
    return b"\xef\xbb\xbf" + b"".join(ended).rstrip(b"\n")


def exact_outcome(content: bytes) -> tuple[list[tuple], list[tuple]]:
    """(valid rows, quarantine rows) of the exact path over the whole file at once."""
    batch, _ = split_lines(content)
    table = validated(batch, Dialect.JSON).to_pylist()
    rows = sorted((tuple(r[f] for f in FIELDS) for r in table if r["error"] is None), key=repr)
    quarantined = sorted((r["line_no"], r["raw"], r["error"]) for r in table if r["error"] is not None)
    return rows, quarantined


def warehouse_outcome(settings) -> tuple[list[tuple], list[tuple]]:
    con = connect_warehouse(settings)
    try:
        rows = sorted(con.execute(f"SELECT {', '.join(FIELDS)} FROM raw.user_events").fetchall(), key=repr)
        quarantined = con.execute(
            "SELECT line_number, raw_text, error FROM raw.user_events_quarantine ORDER BY line_number").fetchall()
    finally:
        con.close()
    return rows, quarantined


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 KiB and groups of 700 lines (two row groups of 350)."""
    monkeypatch.setattr(landing, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(landing, "ROW_GROUP_ROWS", 350)
    monkeypatch.setattr(landing, "FAST_GROUP_LINES", 700)


def load_one(settings, caplog):
    with caplog.at_level(logging.INFO, logger="engage.loader"):
        summary = load_pending(settings)
    [result] = summary.files
    [logged] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("event=file_loaded", "event=file_unreadable"))]
    assert (f"whole_file_lines={result.whole_file_lines} fast_lines={result.fast_lines} "
            f"exact_lines={result.exact_lines}") in logged
    return result


def count_lines(content: bytes) -> int:
    return content.count(b"\n") + (not content.endswith(b"\n"))


def test_a_clean_file_is_loaded_whole(engage_home, caplog):
    events = edge_case_events(seed=5, n_events=3000)
    content = b"".join(orjson.dumps(e) + b"\n" for e in events)
    (engage_home.landing / "clean.ndjson").write_bytes(content)
    result = load_one(engage_home, caplog)
    assert (result.whole_file_lines, result.fast_lines, result.exact_lines) == (len(events), 0, 0)
    assert (result.rows_loaded, result.rows_quarantined) == (len(events), 0)
    con = duckdb.connect()
    oracle_table(con, events)
    expected = sorted(con.execute(f"SELECT {', '.join(FIELDS)} FROM user_events").fetchall(), key=repr)
    assert warehouse_outcome(engage_home) == (expected, [])


def test_bad_rows_in_valid_utf8_stay_on_the_fast_path_with_exact_line_numbers(engage_home, caplog, small_blocks):
    content = mixed_content(seed=6, n=4000, invalid_utf8_every=None)
    (engage_home.landing / "mixed.ndjson").write_bytes(content)
    result = load_one(engage_home, caplog)
    assert (result.whole_file_lines, result.fast_lines, result.exact_lines) == (0, count_lines(content), 0)
    expected_rows, expected_quarantine = exact_outcome(content)
    assert result.rows_quarantined == len(expected_quarantine) > 100
    assert warehouse_outcome(engage_home) == (expected_rows, expected_quarantine)


def test_blocks_with_invalid_utf8_take_the_exact_path_and_the_rest_the_fast_path(engage_home, caplog, small_blocks):
    content = mixed_content(seed=7, n=4000, invalid_utf8_every=1500)
    (engage_home.landing / "utf8.ndjson").write_bytes(content)
    result = load_one(engage_home, caplog)
    assert result.fast_lines > 0 and result.exact_lines > 0, (result.fast_lines, result.exact_lines)
    assert result.fast_lines + result.exact_lines == count_lines(content)
    expected_rows, expected_quarantine = exact_outcome(content)
    assert sum("UTF-8" in e for _, _, e in expected_quarantine) == 3
    assert warehouse_outcome(engage_home) == (expected_rows, expected_quarantine)


def test_default_block_sizes_mixed_file(engage_home, caplog):
    """Real block (8 MiB) and group sizes: a first block of clean lines and bad rows, then a block
    holding one line of invalid UTF-8."""
    content = mixed_content(seed=8, n=45_000, invalid_utf8_every=None)
    lines = content.split(b"\n")
    at = len(lines) * 3 // 4
    lines[at] = lines[at].replace(b'"user_id":"', b'"user_id":"\xc3\x28', 1)
    content = b"\n".join(lines)
    assert len(content) > landing.CHUNK_BYTES
    (engage_home.landing / "big.ndjson").write_bytes(content)
    result = load_one(engage_home, caplog)
    assert result.fast_lines > 0 and result.exact_lines > 0
    assert result.fast_lines + result.exact_lines == len(lines)
    assert warehouse_outcome(engage_home) == exact_outcome(content)


def test_gzip_takes_the_fast_path_too(engage_home, caplog, small_blocks):
    content = mixed_content(seed=9, n=2000, invalid_utf8_every=None)
    (engage_home.landing / "mixed.ndjson.gz").write_bytes(gzip.compress(content))
    result = load_one(engage_home, caplog)
    assert (result.fast_lines, result.exact_lines) == (count_lines(content), 0)
    assert warehouse_outcome(engage_home) == exact_outcome(content)


def test_a_gzip_cut_after_many_fast_groups_loads_nothing(engage_home, caplog, small_blocks):
    """Rows of the groups read before the error were inserted: the file's transaction rolls back,
    and the file is loaded again as quarantine only."""
    content = b"".join(line + b"\n" for line in event_lines(10, 5000))
    whole = gzip.compress(content)
    (engage_home.landing / "cut.ndjson.gz").write_bytes(whole[: len(whole) * 9 // 10])
    result = load_one(engage_home, caplog)
    assert result.status == "unreadable" and result.rows_loaded == 0
    assert result.fast_lines >= 4 * landing.FAST_GROUP_LINES  # inserted, then rolled back
    rows, quarantined = warehouse_outcome(engage_home)
    assert rows == [] and len(quarantined) == result.rows_quarantined > 2000
    assert all("cannot be read to its end" in e for _, _, e in quarantined)
    assert [n for n, _, _ in quarantined] == list(range(1, len(quarantined) + 1))


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80"])
def test_fast_lines_refuses_invalid_utf8(bad):
    assert landing.fast_lines(b'{"a":"' + bad + b'"}\n', 1) is None


def test_fast_lines_are_the_lines_split_lines_gives():
    data = b"\xef\xbb\xbf" + b"\n".join([b"{}", b"", b"  ", b"\r", b'{"a":"\xc3\xa9"}\r', b"x\ty", b"\x00"]) + b"\n"
    batch, count = split_lines(data, 1)
    fast = landing.fast_lines(data, 1)
    assert fast.num_rows == count == 7
    assert fast.column("raw").to_pylist() == batch.texts
    assert fast.column("line_no").to_pylist() == list(batch.line_numbers)
    later = landing.fast_lines(data, 41)  # a BOM is only skipped at the start of the file
    assert later.column("raw").to_pylist()[0] == "\ufeff{}" and later.column("line_no").to_pylist()[0] == 41


# ---- the whole-file path --------------------------------------------------------------------

def _line(field: str, value: str) -> str:
    """GOOD with `field` set to the JSON text `value` (added when GOOD has no such field)."""
    event = orjson.loads(GOOD)
    event[field] = "@@"
    return orjson.dumps(event).decode().replace('"@@"', value)


# JSON texts of values, for string fields: each is accepted or refused by the line-by-line SQL, and
# several read as the same text through DuckDB's reader ("true" and true, "1.5" and 1.5...).
STRING_VALUES = ['"true"', "true", '"false"', "false", '"1.5"', "1.5", "-1.5", "1e3", '"1e3"', "1E400", "NaN",
                 "Infinity", "-Infinity", '"NaN"', '"Infinity"', '"-Infinity"', "{}", '{"a":1}', '"{a}"', "[1]",
                 '"[x]"', "[]", "null", '"null"', "42", '"42"', "-7", '"-7"', "0", "-0", "12345678901234567890123",
                 '"0042"', '""', '"caf\\u00e9"', '"a\\"b"', '"\\u0000x"', '"Ürümqi"', '"-"', '"-x"', '"9 lives"',
                 '"{"', '"~tilde"', '" lead"']
DURATION_VALUES = ["0", "-0", "44", '"44"', '"0042"', '""', "4.0", '"4.0"', "1e3", "true", '"true"', "null", "{}",
                   "4294967295", "4294967296", "18446744073709551616", '"-5"', "-5", '" 5"']
TIMESTAMP_VALUES = ["1736937045", '"1736937045"', "1736937045.5", "-1736937045", '"2025-01-15T10:30:45Z"',
                    '"2025-01-15 10:30:45"', '"2025-01-15 24:00:00"', '"2025-01-15 10:30:45.123"',
                    '"2025-01-15T10:30:45+05:45"', '"0001-01-01 00:00:00"', '"10000-01-01 00:00:00"',
                    '"2025-02-29 00:00:00"', '"2025-01-15\\u002010:30:45"', "true", "null", '"2025-01-15"']
VALUE_CASES = ([("user_id", v) for v in STRING_VALUES] + [("page", v) for v in STRING_VALUES]
               + [("duration", v) for v in DURATION_VALUES] + [("timestamp", v) for v in TIMESTAMP_VALUES])


def test_whole_file_path_agrees_with_the_line_sql_on_every_kind_of_value(engage_home, caplog):
    """One file per value (with good lines around it), loaded together: each file's rows and
    quarantine equal the line-by-line SQL's, whichever path it took; the files whose values are
    all valid and unambiguous were loaded whole, the others declined (and then took the fast path)."""
    contents = {}
    for i, (field, value) in enumerate(VALUE_CASES):
        content = "\n".join([GOOD, GOOD, _line(field, value), GOOD]).encode() + b"\n"
        name = f"case-{i:03d}.ndjson"
        (engage_home.landing / name).write_bytes(content)
        contents[name] = (field, value, content)
    with caplog.at_level(logging.INFO, logger="engage.loader"):
        summary = load_pending(engage_home)
    con = connect_warehouse(engage_home)
    whole = declined = 0
    try:
        for result in summary.files:
            field, value, content = contents[result.name]
            rows = sorted(con.execute(f"SELECT {', '.join(FIELDS)} FROM raw.user_events WHERE _batch_id = ?",
                                      [result.batch_id]).fetchall(), key=repr)
            quarantined = con.execute("SELECT line_number, raw_text, error FROM raw.user_events_quarantine "
                                      "WHERE source = ? ORDER BY line_number", [result.name]).fetchall()
            assert (rows, quarantined) == exact_outcome(content), (field, value)
            assert result.whole_file_lines + result.fast_lines == 4, (field, value)
            whole += result.whole_file_lines == 4
            declined += result.fast_lines == 4
    finally:
        con.close()
    # the path choice itself: valid, plain values are loaded whole; refused or ambiguous ones are not
    by_value = {(contents[r.name][0], contents[r.name][1]): r for r in summary.files}
    for plain in [("user_id", '"caf\\u00e9"'), ("page", "42"), ("duration", '"0042"'), ("timestamp", "1736937045"),
                  ("timestamp", '"2025-01-15T10:30:45+05:45"'), ("page", '"9 lives"'), ("user_id", '"Ürümqi"')]:
        assert by_value[plain].whole_file_lines == 4, plain
    for refused_or_ambiguous in [("page", "true"), ("page", '"true"'), ("user_id", "1.5"), ("user_id", '"1.5"'),
                                 ("page", "{}"), ("timestamp", '"1736937045"'), ("duration", "4.0")]:
        assert by_value[refused_or_ambiguous].fast_lines == 4, refused_or_ambiguous
    assert whole > 40 and declined > 40, (whole, declined)
    declines = [r.getMessage() for r in caplog.records if "whole_file_path_declined" in r.getMessage()]
    assert len(declines) == declined
    # the reason logged names the first bad row's field (the whole-file statement stops there)
    assert any("a line is not a valid row (timestamp)" in m for m in declines)
    assert any("a line is not a valid row (duration)" in m for m in declines)


@pytest.mark.parametrize("lines, ending", [
    ([GOOD, GOOD + "\x0b"], b"\n"),       # what DuckDB's reader skips as blank but JSON does not
    ([GOOD, GOOD + " "], b"\n"),           # trailing space: not screened as an object line
    ([GOOD, GOOD.replace('"u1"', '"u1","user_id":"u2"')], b"\n"),  # a duplicate key
    ([GOOD, GOOD.replace('"user_id"', '"User_id"')], b"\n"),       # keys are case-sensitive
    ([GOOD, '{"timestamp":"2025-01-15 10:30:45","user_id":"' + "x" * 70_000 + '","event_type":"c","session_id":"s"}'], b"\n"),
    ([GOOD, '{"a":1} {"b":2}'], b"\n"),
    ([GOOD, "{}"], b"\n"),
    ([GOOD] * 3, b"\r\n"),
])
def test_whole_file_path_on_hostile_lines(engage_home, caplog, lines, ending):
    content = b"\xef\xbb\xbf" + ending.join(line.encode() for line in lines)  # a BOM, no final newline
    (engage_home.landing / "hostile.ndjson").write_bytes(content)
    result = load_one(engage_home, caplog)
    assert result.whole_file_lines + result.fast_lines == len(lines)
    assert warehouse_outcome(engage_home) == exact_outcome(content)


def _screen_oracle(data: bytes) -> int | None:
    """What LineScreen must answer, line by line in Python."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        body = line[:-1] if line.endswith(b"\r") else line
        if not (2 <= len(line) <= landing.MAX_LINE_BYTES and line.startswith(b"{") and body.endswith(b"}")):
            return None
    return len(lines) or None


@pytest.mark.parametrize("gz", [False, True])
def test_scan_file_hash_and_screen_across_windows(tmp_path, monkeypatch, gz):
    """Small windows (one page) so that lines straddle them (for gzip: inflated a page at a time);
    the screen equals the line-by-line oracle and the hash is the file's SHA-256, on random mixes
    of good and bad lines."""
    import hashlib

    monkeypatch.setattr(landing, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(landing, "MAX_LINE_BYTES", 3000)
    rng = random.Random(3)
    pieces = [b"{}", b'{"a":"' + b"x" * 2990 + b'"}', b'{"a":"' + b"x" * 3000 + b'"}', b"{\r", b"{}\r", b"", b" {}",
              b"{} ", b"}", b"{", b'{"b":[1,2]}', b"[1]", b"{}\x0b"]
    outcomes = set()
    for trial in range(300):
        good = trial % 2 == 0
        chosen = [rng.choice(pieces[:2] if good else pieces) for _ in range(rng.randrange(0, 12))]
        data = (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + b"\n".join(chosen) + (b"\n" if rng.random() < 0.5 else b"")
        path = tmp_path / f"t{trial}.ndjson{'.gz' if gz else ''}"
        stored = gzip.compress(data, compresslevel=rng.choice([0, 1, 9])) if gz else data
        path.write_bytes(stored)
        scan = landing.scan_file(path, screen=True)
        assert scan.sha256 == hashlib.sha256(stored).hexdigest()
        assert scan.whole_ndjson_lines == _screen_oracle(data), data[:80]
        outcomes.add(scan.whole_ndjson_lines is None)
    assert outcomes == {True, False}


def test_invalid_utf8_in_an_otherwise_clean_file_falls_back_to_the_line_paths(engage_home, caplog):
    """The screen looks at bytes only; DuckDB's reader refuses the invalid UTF-8, the transaction
    rolls back, and the line paths quarantine that one line with the reason."""
    bad = GOOD.encode().replace(b'"u1"', b'"u\xff1"')
    content = b"\n".join([GOOD.encode(), bad, GOOD.encode()]) + b"\n"
    assert landing.scan_file(_write(engage_home.landing / "utf8.ndjson", content), screen=True).whole_ndjson_lines == 3
    result = load_one(engage_home, caplog)
    assert result.whole_file_lines == 0 and result.fast_lines + result.exact_lines == 3
    assert warehouse_outcome(engage_home) == exact_outcome(content)
    assert warehouse_outcome(engage_home)[1][0][0] == 2  # line 2, quarantined
    assert any("whole_file_path_declined" in r.getMessage() for r in caplog.records)


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def test_a_clean_gzip_file_is_loaded_whole_and_a_damaged_or_multi_member_one_is_not(engage_home, caplog):
    events = edge_case_events(seed=15, n_events=2000)
    content = b"".join(orjson.dumps(e) + b"\n" for e in events)
    (engage_home.landing / "clean.ndjson.gz").write_bytes(gzip.compress(content))
    result = load_one(engage_home, caplog)
    assert (result.whole_file_lines, result.fast_lines, result.exact_lines) == (len(events), 0, 0)
    assert warehouse_outcome(engage_home) == exact_outcome(content)
    half = len(content) // 2
    two_members = gzip.compress(content[:half]) + gzip.compress(content[half:])
    for name, stored in [("two.ndjson.gz", two_members), ("cut.ndjson.gz", gzip.compress(content[:half])[:-20]),
                         ("junk.ndjson.gz", gzip.compress(content) + b"junk")]:
        assert landing.scan_file(_write(engage_home.landing / name, stored), screen=True).whole_ndjson_lines is None, name
