"""POST /v0/events: concurrent requests validated together still each get their own rows.

The Events API validates the requests that arrive while a validation runs in one run of the
validation SQL (engage.events.ValidationBatcher). These tests hold the batcher so that a known set
of requests is validated together, then check every request against what it posted: its answer,
its own landing and rejected files, and what the loader makes of them in the warehouse.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
import pytest
from conftest import ADMIN_TOKEN
from fastapi.testclient import TestClient

from engage.events import ValidationBatcher, batcher, rejected_dir
from engage.loader import connect_warehouse, load_pending
from engage.settings import Settings
from engage.validate import refine_error, split_lines, validate, validation_connection
from serving.app import create_app


def event(request: int, i: int, **overrides) -> dict:
    # user_id and event_type name the request, so rows in the warehouse tell where they came from
    return {"timestamp": f"2025-03-01 12:{i % 60:02d}:00", "user_id": f"r{request}-u{i}", "event_type": f"r{request}",
            "session_id": f"s{i}", "duration": i, "platform": "web", **overrides}


@dataclass
class Body:
    """A request body built line by line, with what the validator must make of each line."""

    lines: list[bytes] = field(default_factory=list)  # without line endings
    valid: list[tuple[int, bytes]] = field(default_factory=list)  # (line number, text)
    invalid: list[tuple[int, bytes]] = field(default_factory=list)
    eol: bytes = b"\n"
    final_eol: bool = True

    def add(self, line: bytes | dict, valid: bool | None) -> Body:
        """valid=None: a blank line (not a row)."""
        text = orjson.dumps(line) if isinstance(line, dict) else line
        self.lines.append(text)
        if valid is not None:
            (self.valid if valid else self.invalid).append((len(self.lines), text))
        return self

    def bytes(self) -> bytes:
        data = self.eol.join(self.lines)
        return data + self.eol if self.final_eol and self.lines else data


def bodies() -> list[Body]:
    """Five requests, each with its own kind of trouble, all posted at once."""
    plain = Body()
    for i in range(40):
        plain.add(event(0, i), True)
        if i == 4:
            plain.add(b'{"user_id": "r0-broken", ', False)
        if i == 11:
            plain.add(event(0, i, user_id=""), False)
        if i == 30:
            plain.add(event(0, i, duration=3.5), False)
    crlf = Body(eol=b"\r\n")
    for i in range(25):
        crlf.add(event(1, i), True)
        if i % 10 == 0:
            crlf.add(b"", None)
            crlf.add(b"[1]", False)
    utf8 = Body()
    utf8.add(event(2, 0), True).add(b'{"user_id": "r2-\xff\xfe"}', False)
    for i in range(1, 300):  # the longest body: rows of the others follow its line numbers
        utf8.add(event(2, i), True)
    utf8.add(orjson.dumps(event(2, 300, timestamp="2025-02-30 10:00:00")), False)
    blank = Body().add(b"", None).add(b"   ", None).add(b"", None)
    single = Body(final_eol=False).add(event(4, 0), True)
    return [plain, crlf, utf8, blank, single]


@pytest.fixture
def settings(engage_home) -> Settings:
    return Settings(home=engage_home.home, admin_token=ADMIN_TOKEN)


def post(client: TestClient, body: bytes):
    return client.post("/v0/events?name=user_events&wait=true", content=body,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_requests_validated_together_each_get_their_own_counts_files_and_rows(settings):
    posted = bodies()
    before = batcher.validations.copy()
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(len(posted)) as pool:
        with batcher.held():
            futures = [pool.submit(post, client, b.bytes()) for b in posted]
            wait_for(lambda: batcher.waiting() == 1 + len(posted))  # the holder, then every request
        answers = [f.result() for f in futures]
    # The five requests were validated by one run of the validation SQL.
    assert (batcher.validations - before) == {len(posted): 1}

    ids = []
    for b, r in zip(posted, answers):
        assert r.status_code == 200, r.text
        assert r.json() == {"successful_rows": len(b.valid), "quarantined_rows": len(b.invalid)}
        ids.append(r.headers["X-Request-ID"])
    assert len(set(ids)) == len(ids)

    for b, request_id in zip(posted, ids):
        landing = list(settings.landing.rglob(f"*-{request_id}.ndjson"))
        rejected = list(rejected_dir(settings).glob(f"*-{request_id}.ndjson"))
        # Each request's valid lines, and only those, in its own landing file, in body order.
        assert [p.read_bytes() for p in landing] == ([b"".join(t + b"\n" for _, t in b.valid)] if b.valid else [])
        # Its invalid lines in its own rejected file, with its source and its own line numbers; the
        # messages are those of validating the body alone.
        alone = validate(validation_connection(), split_lines(b.bytes())[0]).project("line_no, raw, error").fetchall()
        expected = [{"source": f"request:{request_id}", "line_number": n, "raw_text": raw, "error": refine_error(raw, e)}
                    for n, raw, e in sorted(alone) if e is not None]
        records = [orjson.loads(line) for p in rejected for line in p.read_bytes().splitlines()]
        assert records == expected
        assert [(r["line_number"], r["raw_text"]) for r in records] == [
            (n, t.decode("utf-8", "backslashreplace")) for n, t in b.invalid]

    # What the loader makes of the files: per request, loaded + quarantined = the rows it posted.
    load_pending(settings)
    con = connect_warehouse(settings)
    for k, (b, request_id) in enumerate(zip(posted, ids)):
        loaded = con.execute("SELECT count(*) FROM raw.user_events WHERE event_type = ?", [f"r{k}"]).fetchone()[0]
        quarantined = con.execute("SELECT list(line_number ORDER BY line_number) FROM raw.user_events_quarantine "
                                  "WHERE source = ?", [f"request:{request_id}"]).fetchone()[0] or []
        assert loaded == len(b.valid) and quarantined == [n for n, _ in b.invalid]
        assert loaded + len(quarantined) == len(b.valid) + len(b.invalid)
    assert con.execute("SELECT count(*) FROM raw.user_events WHERE NOT starts_with(user_id, event_type || '-')").fetchone() == (0,)


def test_a_lone_request_does_not_wait_and_a_long_body_does_not_queue():
    """No batching window: with no validation running a request validates at once; a body of
    max_lines lines or more validates beside the held batcher instead of queuing."""
    small = ValidationBatcher(max_lines=50)
    lone = split_lines(b"".join(orjson.dumps(event(0, i)) + b"\n" for i in range(3)))[0]
    assert small.validate(lone).column("error").null_count == 3
    assert small.validations == {1: 1}
    long_body = split_lines(b"".join(orjson.dumps(event(1, i)) + b"\n" for i in range(50)))[0]
    queued = split_lines(orjson.dumps(event(2, 0)))[0]
    results = {}
    with small.held():
        t = threading.Thread(target=lambda: results.update(queued=small.validate(queued)))
        t.start()
        wait_for(lambda: small.waiting() == 2)
        assert small.validate(long_body).column("line_no").to_pylist() == list(range(1, 51))
        assert "queued" not in results  # still held
    t.join(30)
    assert results["queued"].column("error").to_pylist() == [None]
    assert small.validations == {1: 2}
