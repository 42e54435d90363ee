"""Hostile landing files: a corpus of bad inputs, generated here, loaded in ONE run of the loader.

For every file of the corpus (docs/RELIABILITY.md, "Bad files"):

* the run does not crash, and the other files of the same run still load;
* every non-blank input row is loaded or quarantined, never dropped: rows_loaded + rows_quarantined
  in the ledger (``raw.loaded_files``) = the file's non-blank rows, the quarantine table holds
  exactly rows_quarantined rows of the file and the raw table exactly rows_loaded;
* every quarantined row has a non-empty reason naming the problem, and its raw text;
* every "canary" value written in the file (a unique user_id) ends up loaded or inside the raw text
  of a quarantined row;
* a file that cannot be read to its end (truncated gzip, corrupt Parquet) loads nothing, says why,
  and stays in the landing folder;
* the whole run, 1 GB gzip bombs and 10 MB lines included, stays under a bounded peak memory.

The run happens in a subprocess so that its peak RSS is its own (``resource.getrusage``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engage.loader import load_pending
from engage.schema import MAX_LINE_BYTES
from engage.settings import Settings

PEAK_RSS_LIMIT = 1536 * 1024 * 1024  # 1.5 GiB for the whole run, bombs included
BOMB_BYTES = 1024 * 1024 * 1024  # 1 GiB of zeros once gunzipped
HUGE_LINE_BYTES = 10 * 1024 * 1024

CSV_HEADER = "timestamp,user_id,event_type,session_id,duration,device,platform,page,country,region,city"
BLANK = b" \t\n\r\f"  # what the validator's blank test (RE2 \s) treats as whitespace


@dataclass
class Case:
    name: str  # path under the landing folder
    content: bytes
    rows: int | None  # non-blank input rows; None: not countable (unreadable file, random CSV)
    loaded: int | None  # rows that must load; None: any
    reason: str = ""  # every quarantine error of the file contains this (regular expression, case-insensitive)
    canaries: list[str] = field(default_factory=list)  # user_ids that must be loaded or inside a quarantined row
    unreadable: bool = False  # the file cannot be read to its end: nothing loads


def event(tag: str, **overrides) -> dict:
    return {"timestamp": "2025-03-01 12:00:00", "user_id": tag, "event_type": "click", "session_id": f"s-{tag}",
            "duration": 5, "device": "desktop", "platform": "web", "page": "/", "country": "FR",
            "region": "IDF", "city": "Paris", **overrides}


def jline(tag: str, **overrides) -> bytes:
    return orjson.dumps(event(tag, **overrides))


def csv_line(tag: str, **overrides) -> str:
    e = event(tag, **overrides)
    return ",".join(str(e[c]) for c in CSV_HEADER.split(","))


def count_json_rows(content: bytes) -> int:
    """Non-blank lines of NDJSON: what the contract calls rows (a leading BOM is not content)."""
    content = content.removeprefix(b"\xef\xbb\xbf")
    lines = content.split(b"\n")
    return sum(1 for line in lines if line.strip(BLANK))


# ----------------------------------------------------------------------------- the corpus

def json_cases() -> list[Case]:
    cases: list[Case] = []

    def add(name: str, bad: list[bytes], reason: str, loaded_bad: int = 0, suffix: str = ".ndjson") -> None:
        """A file: a canary, the bad lines, a canary (the neighbours of a bad line still load)."""
        first, last = f"canary:{name}:first", f"canary:{name}:last"
        content = b"\n".join([jline(first), *bad, jline(last)]) + b"\n"
        cases.append(Case(f"json/{name}{suffix}", content, count_json_rows(content), 2 + loaded_bad, reason,
                          [first, last]))

    ts = '"timestamp":"2025-03-01 12:00:00"'
    req = f'{ts},"user_id":"u","event_type":"e","session_id":"s"'
    # Malformed JSON.
    add("unterminated_string", [b'{"timestamp":"2025-03-01 12:00:00","user_id":"u'], "invalid JSON")
    add("missing_brace", [b'{' + req.encode()], "invalid JSON")
    # Leniency of the JSON parser (DuckDB's): a trailing comma is accepted; the row is unambiguous.
    add("trailing_comma", [b'{' + req.encode() + b',}'], "", 1)
    add("single_quotes", [b"{'timestamp':'2025-03-01 12:00:00','user_id':'u'}"], "invalid JSON")
    add("comment", [b"// a comment", b"# another"], "invalid JSON")
    add("two_objects_one_line", [b'{' + req.encode() + b'}{' + req.encode() + b'}'], "invalid JSON")
    add("json_array_of_events", [b"[" + jline("in-array") + b"]"], "JSON object")
    add("top_level_scalars", [b'"a string"', b"42", b"-1.5e300", b"null", b"true", b"false"], "JSON object")
    add("empty_object", [b"{}"], "timestamp: missing")
    add("unquoted_keys", [b"{timestamp: 1}"], "invalid JSON")
    add("lone_brace", [b"{", b"}", b"]"], "invalid JSON")
    # Deep nesting: far over the line limit, just under it, and as the whole row.
    add("nested_100000", [b'{' + req.encode() + b',"page":' + b"[" * 100_000 + b"]" * 100_000 + b"}"], "byte limit")
    add("nested_30000_in_a_field", [b'{' + req.encode() + b',"page":' + b"[" * 30_000 + b"]" * 30_000 + b"}"],
        "page: must be a string")
    add("nested_32000_array_row", [b"[" * 32_000 + b"]" * 32_000], "JSON object")
    add("nested_10000_objects", [b'{"a":' * 10_000 + b"1" + b"}" * 10_000], "timestamp: missing")
    add("nested_unclosed_50000", [b"[" * 50_000], "invalid JSON")
    # Duplicate keys: valid JSON, loaded (one of the two values; never half of each).
    add("duplicate_keys", [b'{' + req.encode() + b',"user_id":"dup-second","duration":1,"duration":2}'], "", 1)
    # Escaped surrogates: lone ones are not Unicode text; a proper pair is.
    for i, esc in enumerate([rb"\ud800", rb"\udfff", rb"\ud800\u0041", rb"\udc00\ud800", rb"x\udbff"]):
        add(f"lone_surrogate_{i}", [b'{' + ts.encode() + b',"user_id":"' + esc + b'","event_type":"e","session_id":"s"}'],
            "invalid JSON")
    add("surrogate_pair", [b'{' + ts.encode() + rb',"user_id":"\ud83d\ude00","event_type":"e","session_id":"s"}'], "", 1)
    # Unicode edge cases that are valid text: loaded as they are.
    add("unicode_edges", [jline(v) for v in ["\uffff", "\U0010ffff", "\u202eevil", "a\u200db", "e\u0301\u0301\u0301",
                                             "👩‍👩‍👧‍👦", "\u2028\u2029", "\ufeffbom-inside", "ｆｕｌｌ"]], "", 9)
    add("escaped_nul_and_controls", [b'{' + ts.encode() + rb',"user_id":"a\u0000b\u001f\u007f","event_type":"e","session_id":"s"}'],
        "", 1)
    # Control characters and NUL bytes written raw.
    add("raw_control_in_string", [b'{' + ts.encode() + b',"user_id":"a\x01b","event_type":"e","session_id":"s"}',
                                  b'{' + ts.encode() + b',"user_id":"a\x1bb","event_type":"e","session_id":"s"}'],
        "invalid JSON")
    add("raw_nul_in_string", [b'{' + ts.encode() + b',"user_id":"a\x00b","event_type":"e","session_id":"s"}'], "invalid JSON")
    add("nul_bytes_line", [b"\x00" * 64, b"\x00{" + req.encode() + b"}"], "invalid JSON")
    add("raw_del_in_string", [b'{' + ts.encode() + b',"user_id":"a\x7fb","event_type":"e","session_id":"s"}'], "", 1)
    add("vertical_tab_and_nbsp_lines", [b"\x0b", "\u00a0".encode(), "\u3000".encode()], "invalid JSON")
    add("cr_inside_line", [b'{' + req.encode() + b'}\r{' + req.encode() + b'}'], "invalid JSON")
    # Lines at and over the 64 KiB limit, very long field values.
    base = b'{' + req.encode() + b',"page":"'
    add("line_exactly_64KiB", [base + b"p" * (MAX_LINE_BYTES - len(base) - 2) + b'"}'], "", 1)
    add("line_64KiB_plus_1", [base + b"p" * (MAX_LINE_BYTES - len(base) - 1) + b'"}'], "byte limit")
    add("long_field_60000", [jline("long-page", page="é" * 30_000)], "", 1)
    add("long_field_70000", [jline("long-user", user_id="u" * 70_000)], "byte limit")
    # Numbers out of range: durations.
    bad_durations = [b"-1", b"4294967296", b"1e20", b"1e400", b"99999999999999999999999", b"18446744073709551616",
                     b"3.0", b'"1e3"', b'"-5"', b'"0x10"', b'" 5"', '"５"'.encode(), b"true", b"[]", b"{}",
                     b'"4294967296"', b"NaN", b"-Infinity"]
    add("durations_out_of_range_or_malformed", [b'{' + req.encode() + b',"duration":' + v + b"}" for v in bad_durations],
        "duration")
    add("durations_valid_edges", [b'{' + req.encode() + b',"duration":' + v + b"}" for v in
                                  [b"4294967295", b'"0000000000000000000042"', b"-0", b'""', b"null", b"0"]],
        "", 5)
    # Timestamps: epochs out of range, years 0000 / 1000 / 9999 / 10000, impossible dates.
    accepted = ["1000-01-01 00:00:00", "9999-12-31 23:59:59", "0001-01-01 00:00:00", "9999-12-31T23:59:59.999999999Z",
                "0001-01-01T05:00:00+05:00", 253402300799, -62135596800, -1, 0]
    rejected = ["0000-01-01 00:00:00", "9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00+00:01", "10000-01-01 00:00:00",
                1e20, 10**20, 253402300800, -62135596801, 2**63 - 1, -(2**63), "2025-02-30 00:00:00",
                "2025-13-01 00:00:00", "2025-01-01 24:00:00", "2025-12-31 23:59:60", "2025-01-01T00:00:00+24:00",
                "2025-01-01T00:00:00.1234567890Z", "", "1e20", "1700000000", 1.7e9, " 2025-01-01 00:00:00",
                "２０２５-01-01 00:00:00", "2025-01-01\x0000:00:00", True, [2025], {"t": 1}]

    def with_timestamp(value) -> bytes:
        return b'{"timestamp":' + json.dumps(value).encode() + b',"user_id":"u","event_type":"e","session_id":"s"}'

    add("timestamps_accepted_extremes", [with_timestamp(v) for v in accepted], "", len(accepted))
    add("timestamps_out_of_range_or_malformed", [with_timestamp(v) for v in rejected], "timestamp")
    # Missing/empty/null required fields and wrong types.
    add("required_missing_or_empty", [b'{"timestamp":"2025-03-01 12:00:00"}', b'{' + ts.encode() + b',"user_id":"","event_type":"e","session_id":"s"}',
                                      b'{' + ts.encode() + b',"user_id":null,"event_type":"e","session_id":"s"}',
                                      b'{' + ts.encode() + b',"user_id":"u","event_type":{"x":1},"session_id":"s"}',
                                      b'{' + ts.encode() + b',"user_id":"u","event_type":"e","session_id":[1]}'],
        "user_id|event_type|session_id")
    # Blank lines of every kind, CRLF and a last line without newline.
    content = b"\n".join([b"", b"   ", b"\t", b"\r", b"\r\n", jline("canary:blanks:1"), b"", b"\f"]) + b"\n"
    cases.append(Case("json/blank_lines_around.ndjson", content, 1, 1, "", ["canary:blanks:1"]))
    cases.append(Case("json/only_blank_lines.ndjson", b"\n\n   \n\t\t\n\r\n\r\n \r\n\n", 0, 0))
    content = jline("canary:crlf:1") + b"\r\n" + jline("canary:crlf:2") + b"\r\n\r\n"
    cases.append(Case("json/crlf.jsonl", content, 2, 2, "", ["canary:crlf:1", "canary:crlf:2"]))
    content = jline("canary:cr:1") + b"\r" + jline("canary:cr:2") + b"\r"
    # A lone CR is not a line break in NDJSON: the two events are one (invalid) row, kept whole.
    cases.append(Case("json/cr_only.json", content, 1, 0, "invalid JSON", ["canary:cr:1", "canary:cr:2"]))
    content = jline("canary:nonl:1") + b"\n" + jline("canary:nonl:2")
    cases.append(Case("json/no_final_newline.ndjson", content, 2, 2, "", ["canary:nonl:1", "canary:nonl:2"]))
    content = b"\xef\xbb\xbf" + jline("canary:bom:1") + b"\n"
    cases.append(Case("json/bom.ndjson", content, 1, 1, "", ["canary:bom:1"]))
    content = b"\xef\xbb\xbf\xef\xbb\xbf" + jline("canary:bom2:1") + b"\n" + jline("canary:bom2:2") + b"\n"
    cases.append(Case("json/double_bom.ndjson", content, 2, 1, "invalid JSON", ["canary:bom2:1", "canary:bom2:2"]))
    return cases


INVALID_UTF8 = {
    "ff": b"\xff",
    "c3_28": b"\xc3\x28",
    "surrogate_ed_a0_80": b"\xed\xa0\x80",
    "above_10ffff": b"\xf4\x90\x80\x80",
    "overlong_c0_af": b"\xc0\xaf",
    "truncated_e2_82": b"\xe2\x82",
    "continuation_80": b"\x80",
}


def invalid_utf8_cases() -> list[Case]:
    cases = []
    good = jline("u")
    positions = {
        "line_start": lambda bad: bad + good,
        "in_key": lambda bad: good.replace(b'"user_id"', b'"user' + bad + b'_id"'),
        "in_value": lambda bad: good.replace(b'"u"', b'"u' + bad + b'"'),
        "line_end": lambda bad: good + bad,
    }
    for seq_name, bad in INVALID_UTF8.items():
        # One file per kind: a bad line per position, each between canaries.
        lines, canaries = [], []
        for pos, make in positions.items():
            canaries.append(f"canary:utf8:{seq_name}:{pos}")
            lines += [jline(canaries[-1]), make(bad)]
        content = b"\n".join(lines + [jline(f"canary:utf8:{seq_name}:last")]) + b"\n"
        cases.append(Case(f"utf8/{seq_name}.ndjson", content, 2 * len(positions) + 1, len(positions) + 1, "UTF-8",
                          canaries + [f"canary:utf8:{seq_name}:last"]))
        # As the very last bytes of the file, without a newline.
        content = jline(f"canary:utf8:{seq_name}:eof") + b"\n" + good[:-1] + bad
        cases.append(Case(f"utf8/{seq_name}_at_eof.ndjson", content, 2, 1, "UTF-8", [f"canary:utf8:{seq_name}:eof"]))
        # CSV: in a value and at the start of a row.
        row = csv_line("u").encode()
        tag = f"canary:utf8csv:{seq_name}"
        content = (CSV_HEADER + "\r\n" + csv_line(tag) + "\r\n").encode() + row.replace(b",u,", b",u" + bad + b",") + b"\r\n" + bad + row + b"\r\n"
        cases.append(Case(f"utf8/{seq_name}.csv", content, 3, 1, "UTF-8", [tag]))
    # In a gzipped file, and in the CSV header (an unknown column, then a needed one).
    content = gzip.compress(jline("canary:utf8:gz") + b"\n" + b'{"timestamp":"\xff"}\n', mtime=0)
    cases.append(Case("utf8/in_gzip.ndjson.gz", content, 2, 1, "UTF-8", ["canary:utf8:gz"]))
    content = (CSV_HEADER + ",extra").encode() + b"\xff\n" + csv_line("canary:utf8:hdr1").encode() + b",x\n"
    cases.append(Case("utf8/header_extra_column.csv", content, 1, 1, "", ["canary:utf8:hdr1"]))
    content = CSV_HEADER.replace("user_id", "user\udcff_id").encode("utf-8", "surrogateescape") + b"\n" + csv_line("canary:utf8:hdr2").encode() + b"\n"
    cases.append(Case("utf8/header_needed_column.csv", content, 1, 0, "user_id: missing", ["canary:utf8:hdr2"]))
    return cases


def csv_cases() -> list[Case]:
    cases = []

    def add(name: str, text: str | bytes, rows: int, loaded: int, reason: str, canaries: list[str]) -> None:
        content = text.encode() if isinstance(text, str) else text
        cases.append(Case(f"csv/{name}.csv", content, rows, loaded, reason, canaries))

    c1, c2 = "canary:csv:1", "canary:csv:2"
    h = CSV_HEADER + "\n"
    add("unterminated_quote_required", h + csv_line(c1) + "\n" + '2025-03-01 12:00:00,"u,e,s\n' + csv_line(c2) + "\n",
        2, 1, "unbalanced double quote", [c1, c2])
    # A quote opened in the last column and never closed: the next row must not load inside it.
    add("unterminated_quote_last_column", h + csv_line(c1) + "\n" + csv_line("x", city='"Paris') + "\n" + csv_line(c2) + "\n",
        2, 1, "unbalanced double quote", [c1, c2])
    add("stray_quote_unquoted_field", h + csv_line(c1) + "\n" + csv_line("x", page='/a"b') + "\n", 2, 1,
        "unbalanced double quote", [c1])
    add("ragged_short_rows", h + csv_line(c1) + "\n2025-03-01 12:00:00,u\n2025-03-01 12:00:00\n,\n", 4, 1,
        "missing|timestamp", [c1])
    add("ragged_long_rows", h + csv_line(c1) + ",extra,cells,here\n" + csv_line(c2) + "\n", 2, 2, "", [c1, c2])
    add("header_only", h, 0, 0, "", [])
    add("header_only_no_newline", CSV_HEADER, 0, 0, "", [])
    add("header_and_blank_lines", h + "\n\r\n   \n\n", 0, 0, "", [])
    add("blank_lines_no_header", "\n\n\r\n\n", 0, 0, "", [])
    add("missing_header_columns", "timestamp,user_id\n2025-03-01 12:00:00,u1\n2025-03-01 12:00:00,u2\n", 2, 0,
        "event_type: missing", [])
    add("no_header_row", csv_line(c1) + "\n" + csv_line(c2) + "\n", 1, 0, "timestamp: missing", [c2])
    add("unknown_header", "a,b,c\n1,2,3\n", 1, 0, "timestamp: missing", [])
    add("bom_header", "\ufeff" + h + csv_line(c1) + "\n", 1, 1, "", [c1])
    add("bom_crlf", ("\ufeff" + h + csv_line(c1) + "\n" + csv_line(c2) + "\n").replace("\n", "\r\n"), 2, 2, "", [c1, c2])
    add("cr_only_endings", (h + csv_line(c1) + "\n" + csv_line(c2) + "\n").replace("\n", "\r"), 2, 2, "", [c1, c2])
    add("mixed_endings", CSV_HEADER + "\r\n" + csv_line(c1) + "\r" + csv_line(c2) + "\n", 2, 2, "", [c1, c2])
    add("duplicate_header_names", CSV_HEADER + ",user_id\n" + csv_line("x") + f",{c1}\n", 1, 1, "", [c1])
    add("empty_header_names", ",,," + CSV_HEADER + ",,\n,,," + csv_line(c1) + ",,\n", 1, 1, "", [c1])
    add("quoted_header", ",".join(f'"{n}"' for n in CSV_HEADER.split(",")) + "\n" + csv_line(c1) + "\n", 1, 1, "", [c1])
    add("only_commas", h + csv_line(c1) + "\n,,,,,,,,,,\n", 2, 1, "timestamp", [c1])
    add("nul_and_controls_in_values", h + csv_line(c1, page="a\x00b\x01c\x1b") + "\n", 1, 1, "", [c1])
    add("epoch_timestamp", h + csv_line(c1) + "\n" + csv_line("x", timestamp="1700000000") + "\n", 2, 1,
        "epoch numbers are not accepted", [c1])
    add("year_0000", h + csv_line(c1) + "\n" + csv_line("x", timestamp="0000-01-01 00:00:00") + "\n", 2, 1, "out of range", [c1])
    add("years_1000_9999", h + csv_line(c1, timestamp="1000-01-01 00:00:00") + "\n" + csv_line(c2, timestamp="9999-12-31 23:59:59") + "\n",
        2, 2, "", [c1, c2])
    add("duration_out_of_range", h + csv_line(c1) + "\n" + csv_line("x", duration="4294967296") + "\n", 2, 1, "duration", [c1])
    add("quoted_multiline_field", h + csv_line(c1, page='"a\nb\r\nc"') + "\n" + csv_line(c2) + "\n", 2, 2, "", [c1, c2])
    add("long_quoted_field_60000", h + csv_line(c1, page='"' + "p" * 60_000 + '"') + "\n", 1, 1, "", [c1])
    add("long_field_70000", h + csv_line(c1) + "\n" + csv_line("x", page="p" * 70_000) + "\n", 2, 1, "byte limit", [c1])
    # A quoted field over the csv module's field limit, made of short lines: its record is
    # quarantined and reading goes on (the rows after it are counted only roughly: rows=None).
    lines = "\n".join(csv_line(f"canary:csv:swallowed:{i}") for i in range(3000))
    text = h + csv_line(c1) + "\n" + csv_line("x", city='"start') + "\n" + lines + '"\n' + csv_line(c2) + "\n"
    cases.append(Case("csv/quoted_field_over_field_limit.csv", text.encode(), None, None, "",
                      [c1, c2] + [f"canary:csv:swallowed:{i}" for i in range(0, 3000, 97)]))
    return cases


def gzip_cases() -> list[Case]:
    cases = []
    body = b"".join(jline(f"canary:gz:{i}") + b"\n" for i in range(200))
    whole = gzip.compress(body, mtime=0)
    cases.append(Case("gz/truncated.ndjson.gz", whole[: len(whole) // 2], None, 0, "cannot be read to its end", unreadable=True))
    cases.append(Case("gz/truncated_header.ndjson.gz", whole[:5], None, 0, "cannot be read to its end", unreadable=True))
    csv_body = (CSV_HEADER + "\n" + "".join(csv_line(f"canary:gzcsv:{i}") + "\n" for i in range(200))).encode()
    whole_csv = gzip.compress(csv_body, mtime=0)
    cases.append(Case("gz/truncated.csv.gz", whole_csv[:-30], None, 0, "cannot be read to its end", unreadable=True))
    cases.append(Case("gz/not_gzip.ndjson.gz", body[:500], None, 0, "cannot be read to its end", unreadable=True))
    bad_crc = bytearray(whole)
    bad_crc[-8] ^= 0xFF
    cases.append(Case("gz/bad_crc.ndjson.gz", bytes(bad_crc), None, 0, "cannot be read to its end", unreadable=True))
    corrupt = bytearray(whole)
    for i in range(20, 60):
        corrupt[i] ^= 0x5A
    cases.append(Case("gz/corrupt_deflate.jsonl.gz", bytes(corrupt), None, 0, "cannot be read to its end", unreadable=True))
    cases.append(Case("gz/trailing_garbage.ndjson.gz", whole + b"garbage after the gzip member", None, 0,
                      "cannot be read to its end", unreadable=True))
    cases.append(Case("gz/empty_content.ndjson.gz", gzip.compress(b"", mtime=0), 0, 0))
    two = gzip.compress(jline("canary:gz:member1") + b"\n", mtime=0) + gzip.compress(jline("canary:gz:member2") + b"\n", mtime=0)
    cases.append(Case("gz/two_members.ndjson.gz", two, 2, 2, "", ["canary:gz:member1", "canary:gz:member2"]))
    # Gzip bombs: 1 GiB of zeros in about 1 MB (gzip members of 1 MiB of zeros, concatenated).
    member = gzip.compress(bytes(1024 * 1024), compresslevel=9, mtime=0)
    bomb = member * (BOMB_BYTES // (1024 * 1024))
    cases.append(Case("gz/bomb.ndjson.gz", bomb, 1, 0, "byte limit"))
    # (+ an empty member: not the same bytes, so not a duplicate of the first bomb)
    cases.append(Case("gz/bomb.csv.gz", bomb + gzip.compress(b"", mtime=0), 1, 0, "byte limit"))
    return cases


def huge_line(name: str) -> bytes:
    if name.endswith(".csv"):
        return csv_line("x", page="y" * HUGE_LINE_BYTES).encode()
    return b'{"timestamp":"2025-03-01 12:00:00","user_id":"u","event_type":"e","session_id":"s","page":"' + b"x" * HUGE_LINE_BYTES + b'"}'


def huge_line_cases() -> list[Case]:
    cases = []
    huge = huge_line(".ndjson")
    a, b = "canary:huge:1", "canary:huge:2"
    cases.append(Case("huge/line_10MB.ndjson", jline(a) + b"\n" + huge + b"\n" + jline(b) + b"\n", 3, 2, "byte limit", [a, b]))
    cases.append(Case("huge/line_10MB_at_eof.ndjson", jline(a) + b"\n" + huge, 2, 1, "byte limit", [a]))
    text = CSV_HEADER + "\n" + csv_line(a) + "\n" + huge_line(".csv").decode() + "\n" + csv_line(b) + "\n"
    cases.append(Case("huge/line_10MB.csv", text.encode(), 3, 2, "byte limit", [a, b]))
    return cases


def garbage_cases() -> list[Case]:
    rng = random.Random(6)
    cases = []
    for name in ("garbage.ndjson", "garbage.jsonl", "garbage.json"):
        content = rng.randbytes(20_000)
        cases.append(Case(f"garbage/{name}", content, count_json_rows(content), 0, ""))
    cases.append(Case("garbage/garbage.csv", rng.randbytes(20_000), None, 0, ""))
    cases.append(Case("garbage/garbage.parquet", rng.randbytes(20_000), None, 0, "cannot be read to its end", unreadable=True))
    cases.append(Case("garbage/garbage.ndjson.gz", rng.randbytes(20_000), None, 0, "cannot be read to its end", unreadable=True))
    content = b"PK\x03\x04" + rng.randbytes(3000)  # a zip archive named .csv
    cases.append(Case("garbage/zip_named.csv", content, None, 0, ""))
    content = bytes(range(256)) * 40  # every byte value, newlines included
    cases.append(Case("garbage/all_bytes.ndjson", content, count_json_rows(content), 0, ""))
    return cases


def parquet_bytes(table: pa.Table, **kwargs) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    return buf.getvalue()


def parquet_cases() -> list[Case]:
    cases = []

    def add(name: str, content: bytes, rows: int | None, loaded: int | None, reason: str = "", canaries=(), unreadable=False):
        cases.append(Case(f"parquet/{name}.parquet", content, rows, loaded, reason, list(canaries), unreadable))

    def events_table(tags: list[str], **columns) -> pa.Table:
        cols = {"timestamp": ["2025-03-01 12:00:00"] * len(tags), "user_id": tags, "event_type": ["e"] * len(tags),
                "session_id": ["s"] * len(tags)}
        cols.update(columns)
        return pa.table(cols)

    good = parquet_bytes(events_table([f"canary:pq:{i}" for i in range(1000)]), row_group_size=100)
    add("wrong_schema", parquet_bytes(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})), 3, 0, "timestamp: missing")
    add("wrong_types", parquet_bytes(pa.table({
        "timestamp": [1.5, 2.5], "user_id": [1.5, 2.0], "event_type": [True, False], "session_id": [[1], []],
    })), 2, 0, "timestamp")
    add("epoch_integer_timestamps", parquet_bytes(events_table(["canary:pq:epoch"], timestamp=[1_700_000_000])), 1, 1, "",
        ["canary:pq:epoch"])
    add("corrupt_footer", good[:-12] + b"\x00" * 8 + good[-4:], None, 0, "cannot be read to its end", unreadable=True)
    add("truncated", good[: len(good) // 2], None, 0, "cannot be read to its end", unreadable=True)
    add("magic_only", b"PAR1PAR1", None, 0, "cannot be read to its end", unreadable=True)
    corrupt = bytearray(good)
    for i in range(len(good) // 2, len(good) // 2 + 300):
        corrupt[i] ^= 0xA5
    add("corrupt_middle", bytes(corrupt), None, 0, "cannot be read to its end", unreadable=True)
    add("nulls_in_required", parquet_bytes(events_table(["canary:pq:nulls", None, "u"], session_id=["s", "s", None])), 3, 1,
        "missing", ["canary:pq:nulls"])
    add("binary_columns", parquet_bytes(events_table(["x", "y"], user_id=pa.array([b"canary:pq:bin", b"bad\xff"], pa.binary()),
                                                     page=pa.array([b"/ok", b"/ok"], pa.binary()))), 2, 1,
        "user_id: invalid UTF-8", ["canary:pq:bin"])
    add("struct_and_list_columns", parquet_bytes(events_table(["a", "b"], device=pa.array([{"k": 1}, None]),
                                                              city=pa.array([None, [1, 2]]))), 2, 0, "device|city")
    deep = [1]
    for _ in range(300):
        deep = [deep]
    # Nesting deeper than the Parquet reader's schema limit (100): the file cannot be read at all.
    add("nesting_over_schema_limit", parquet_bytes(events_table(["a", "canary:pq:deep"], page=[deep, None])), None, 0,
        "cannot be read to its end", unreadable=True)
    deep = [1]
    for _ in range(30):
        deep = [deep]
    add("nested_list_30", parquet_bytes(events_table(["a", "canary:pq:deep30"], page=[deep, None])), 2, 1,
        "page: must be a string", ["canary:pq:deep30"])
    add("timestamps_out_of_range", parquet_bytes(events_table(["a", "b", "canary:pq:ts"], timestamp=pa.array(
        [253402300800, -62135596801, 0], pa.timestamp("s")))), 3, 1, "timestamp", ["canary:pq:ts"])
    add("timestamps_extreme_ns", parquet_bytes(events_table(["canary:pq:ns1", "canary:pq:ns2"], timestamp=pa.array(
        [2**63 - 1, -(2**63) + 1], pa.timestamp("ns")))), 2, 2, "", ["canary:pq:ns1", "canary:pq:ns2"])
    add("timestamps_extreme_ms", parquet_bytes(events_table(["a", "b"], timestamp=pa.array(
        [2**62, -(2**62)], pa.timestamp("ms")))), 2, 0, "timestamp")
    add("time_of_day_timestamp", parquet_bytes(events_table(["a"], timestamp=pa.array([1], pa.time64("us")))), 1, 0, "timestamp")
    add("durations", parquet_bytes(events_table(["a", "b", "c", "canary:pq:dur"], duration=pa.array(
        [1.5, -3.0, 2.0**40, 42.0]))), 4, 0, "duration", ["canary:pq:dur"])
    add("duration_uint64_max", parquet_bytes(events_table(["a", "canary:pq:u64"], duration=pa.array([2**64 - 1, 7], pa.uint64()))),
        2, 1, "duration", ["canary:pq:u64"])
    add("zero_rows", parquet_bytes(events_table([])), 0, 0)
    add("null_columns_everywhere", parquet_bytes(pa.table({c: pa.nulls(2, pa.string()) for c in CSV_HEADER.split(",")})), 2, 0,
        "timestamp: missing")
    return cases


def build_corpus() -> list[Case]:
    corpus = json_cases() + invalid_utf8_cases() + csv_cases() + gzip_cases() + huge_line_cases() + garbage_cases() + parquet_cases()
    names = [c.name for c in corpus]
    assert len(set(names)) == len(names), "duplicate case names"
    contents = [c.content for c in corpus]
    assert len(set(contents)) == len(contents), "two cases with the same bytes (the second would be a duplicate)"
    return corpus


CORPUS = build_corpus()
BY_NAME = {c.name: c for c in CORPUS}


# ----------------------------------------------------------------------------- the run

LOAD_SCRIPT = """
import json, resource, sys
from engage.loader import load_pending
from engage.settings import Settings
settings = Settings(home=sys.argv[1])
first = load_pending(settings)
second = load_pending(settings)
print(json.dumps({
    "files": {f.name: [f.status, f.rows_loaded, f.rows_quarantined] for f in first.files},
    "second_run_files": len(second.files),
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
"""


@dataclass
class Outcome:
    summary: dict  # name -> [status, rows_loaded, rows_quarantined] from load_pending
    peak_rss: int
    second_run_files: int
    ledger: dict  # name -> (batch_id, rows_loaded, rows_quarantined, error)
    raw_users: dict  # batch_id -> list of user_id
    quarantine: dict  # source -> list of (line_number, raw_text, error)
    landing: Path


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> Outcome:
    home = tmp_path_factory.mktemp("hostile") / "home"
    settings = Settings(home=home)
    settings.ensure_dirs()
    for case in CORPUS:
        path = settings.landing / case.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.content)
    env = {k: v for k, v in os.environ.items() if k not in ("ENGAGE_LANDING_DIR", "ENGAGE_HOME")}
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(home)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"the load run crashed:\n{proc.stderr[-5000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        ledger = {r[0]: r[1:] for r in con.execute(
            "SELECT name, batch_id, rows_loaded, rows_quarantined, error FROM raw.loaded_files").fetchall()}
        raw_users: dict[int, list[str]] = {}
        for batch_id, user_id in con.execute("SELECT _batch_id, user_id FROM raw.user_events").fetchall():
            raw_users.setdefault(batch_id, []).append(user_id)
        quarantine: dict[str, list[tuple]] = {}
        for source, line, raw, error in con.execute(
                "SELECT source, line_number, raw_text, error FROM raw.user_events_quarantine ORDER BY source, line_number").fetchall():
            quarantine.setdefault(source, []).append((line, raw, error))
    finally:
        con.close()
    return Outcome(report["files"], report["peak_rss"], report["second_run_files"], ledger, raw_users, quarantine,
                   settings.landing)


def test_the_corpus_is_large_and_varied():
    assert len(CORPUS) >= 100
    kinds = {c.name.split("/")[0] for c in CORPUS}
    assert kinds == {"json", "utf8", "csv", "gz", "huge", "garbage", "parquet"}


def test_one_run_loads_every_file_once_without_crashing(outcome):
    assert sorted(outcome.summary) == sorted(BY_NAME)
    assert sorted(outcome.ledger) == sorted(BY_NAME)
    assert outcome.second_run_files == 0  # nothing is loaded twice


def test_peak_memory_stays_bounded_with_bombs_and_huge_lines(outcome):
    assert outcome.peak_rss < PEAK_RSS_LIMIT, f"peak RSS {outcome.peak_rss / 2**20:.0f} MiB"


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_row_is_loaded_or_quarantined_with_a_reason(outcome, name):
    case = BY_NAME[name]
    status, loaded, quarantined = outcome.summary[name]
    batch_id, ledger_loaded, ledger_quarantined, ledger_error = outcome.ledger[name]
    assert (ledger_loaded, ledger_quarantined) == (loaded, quarantined)
    rows = outcome.quarantine.get(name, [])
    users = outcome.raw_users.get(batch_id, [])
    # The tables agree with the ledger: nothing half-loaded, nothing unaccounted for.
    assert len(rows) == quarantined and len(users) == loaded
    assert len({line for line, _, _ in rows}) == len(rows), "two quarantine rows for one line"
    if case.unreadable:
        assert status == "unreadable" and loaded == 0 and quarantined >= 1 and ledger_error
        assert (outcome.landing / name).exists()  # kept, to be repaired and dropped again
    else:
        assert status == "loaded" and ledger_error is None
    if case.rows is not None:
        assert loaded + quarantined == case.rows
    if case.loaded is not None:
        assert loaded == case.loaded, [e for _, _, e in rows][:3]
    for line, raw, error in rows:
        assert error and error.strip(), f"line {line}: empty reason"
        assert re.search(case.reason, error, re.IGNORECASE), f"line {line}: {error!r} does not name {case.reason!r}"
        assert raw or "unreadable rest" in error, f"line {line}: raw text not kept"
    if not case.unreadable:
        kept = set(users)
        quarantined_text = "\n".join(raw for _, raw, _ in rows)
        lost = [c for c in case.canaries if c not in kept and c not in quarantined_text]
        assert not lost, f"rows neither loaded nor quarantined: {lost[:5]}"


def test_specific_outcomes(outcome):
    """What a few files load, beyond counts."""
    def users(name):
        return outcome.raw_users.get(outcome.ledger[name][0], [])

    # Duplicate keys: the first occurrence, whole.
    assert [u for u in users("json/duplicate_keys.ndjson") if not u.startswith("canary")] == ["u"]  # the first wins
    assert "\U0001F600" in users("json/surrogate_pair.ndjson")
    assert "a\x00b\x1f\x7f" in users("json/escaped_nul_and_controls.ndjson")
    assert "canary:pq:bin" in users("parquet/binary_columns.parquet")  # binary column read as UTF-8 text
    # The swallowing quote: the row after it is quarantined inside it, never loaded inside a field.
    rows = outcome.quarantine["csv/unterminated_quote_last_column.csv"]
    assert len(rows) == 1 and "canary:csv:2" in rows[0][1]
    # A 10 MB line is kept by its start, with its size.
    for name in ("huge/line_10MB.csv", "huge/line_10MB.ndjson"):
        [(line, raw, error)] = outcome.quarantine[name]
        assert line == 2 + name.endswith(".csv") and "over the 65536-byte limit" in error
        assert raw.startswith(("2025-03-01 12:00:00,x,", '{"timestamp"'))
        assert len(raw) < 70_000 and "truncated: the line is" in raw or len(raw) == len(huge_line(name))


@pytest.mark.parametrize("name", ["empty.ndjson", "empty.jsonl", "empty.json", "empty.csv", "empty.parquet",
                                  "empty.ndjson.gz", "empty.csv.gz"])
def test_an_empty_file_of_any_format(engage_home, name):
    (engage_home.landing / name).write_bytes(b"")
    summary = load_pending(engage_home)
    [result] = summary.files
    if name.endswith((".parquet",)):
        assert result.status == "unreadable" and result.rows_quarantined == 1 and result.rows_loaded == 0
    else:
        assert result.status == "loaded" and (result.rows_loaded, result.rows_quarantined) == (0, 0)
    assert load_pending(engage_home).files == []
