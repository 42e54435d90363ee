"""Accepting a batch of events posted over HTTP (``POST /v0/events``), without touching the warehouse.

The API is not the warehouse's writer. A request's rows are validated by the one validator; the
valid rows become an immutable batch file in the landing folder (temporary name, fsync, rename),
which the landing sensor picks up like any other file; the invalid rows become a *rejected* file
(``state/rejected/``) of quarantine records that the loader moves into
``raw.user_events_quarantine`` in its next run, with the request as their source and their line
numbers in the request body.

Requests that arrive while a validation runs are validated together in the next one
(:class:`ValidationBatcher`): the validation SQL costs ~15-20 ms per run whatever its size, ~4 µs
per line, so one run for four 1,000-line requests costs about a third of four runs.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engage.files import write_atomically
from engage.landing import REJECTED_DIR
from engage.settings import Settings
from engage.validate import LineBatch, refine_error, split_lines, validate_together, validation_connection

@dataclass
class AcceptedBatch:
    successful_rows: int
    quarantined_rows: int
    landing_file: Path | None
    rejected_file: Path | None


def rejected_dir(settings: Settings) -> Path:
    return settings.state_dir / REJECTED_DIR


# Rows turned into Python objects at a time: a 10 MiB body can hold millions of tiny lines.
CHUNK_ROWS = 65_536


def _valid_lines(rows: pa.Table) -> Iterator[bytes]:
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows.slice(start, CHUNK_ROWS)
        raws = part.column("raw").filter(pc.is_null(part.column("error"))).to_pylist()
        if raws:
            yield ("\n".join(raws) + "\n").encode()


def _rejected_records(rows: pa.Table, source: str) -> Iterator[bytes]:
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows.slice(start, CHUNK_ROWS)
        part = part.filter(pc.is_valid(part.column("error")))
        # (+ b"\n" copies each record to its own size: the buffer orjson returns holds a few KiB)
        yield b"".join(
            orjson.dumps({"source": source, "line_number": n, "raw_text": raw, "error": refine_error(raw, err)}) + b"\n"
            for n, raw, err in zip(*(part.column(i).to_pylist() for i in range(3)))
        )


# Lines one validation takes at most from the requests waiting (~80 ms of validation); a body at
# least this long is validated on its own, beside the batches, so small requests never queue behind it.
BATCH_LINES = 20_000


def _size(batch: LineBatch) -> int:
    return len(batch.texts) + len(batch.rejected)


@dataclass(eq=False)
class _Waiting:
    """A request's lines waiting for a validation, then its outcome."""

    batch: LineBatch
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # woken to run the next validation (its own among others)
    rows: pa.Table | None = None
    error: BaseException | None = None


class ValidationBatcher:
    """Validates the requests that arrive while a validation runs together, in the next one.

    Opportunistic, no batching window: a request arriving when no validation runs validates its
    lines at once, in its own thread. One arriving while one runs waits; when that validation ends,
    the first waiting request runs the next one with every request waiting then (up to
    ``max_lines`` lines, in arrival order) and hands each its own rows (``validate_together``);
    each request then writes its own files and answers in its own thread. One validation runs at a
    time, so the validator's threads (DuckDB's two) are not shared by several statements.
    """

    def __init__(self, max_lines: int = BATCH_LINES):
        self.max_lines = max_lines
        self._lock = threading.Lock()
        self._waiting: deque[_Waiting] = deque()
        self._running = False  # a validation runs (or is held); whoever heads the queue runs the next
        # validations run, by how many requests each validated (for tests and profiling)
        self.validations: Counter[int] = Counter()

    def validate(self, batch: LineBatch) -> pa.Table:
        """The batch's rows (line_no, raw, error), in line order, as ``validate_together`` gives them."""
        if _size(batch) >= self.max_lines:
            return validate_together(validation_connection(), [batch])[0]
        me = self._join(batch)
        if me.leads:
            self._run_next()
        if me.error is not None:
            raise me.error
        assert me.rows is not None
        return me.rows

    def waiting(self) -> int:
        """Requests waiting for a validation."""
        with self._lock:
            return len(self._waiting)

    @contextmanager
    def held(self) -> Iterator[None]:
        """No validation starts in the block: requests arriving meanwhile wait, and are validated
        together after it (tests use it to batch a known set of requests)."""
        self._join(LineBatch())
        try:
            yield
        finally:
            with self._lock:
                self._waiting.popleft()  # `me`: it leads, so it heads the queue
            self._hand_over()

    def _join(self, batch: LineBatch) -> _Waiting:
        """Queue the batch; return once it leads (runs the next validation) or has its outcome."""
        me = _Waiting(batch)
        with self._lock:
            self._waiting.append(me)
            me.leads = not self._running
            self._running = True
        if not me.leads:
            me.woken.wait()
        return me

    def _hand_over(self) -> None:
        """After a validation: wake the request heading the queue to run the next one."""
        with self._lock:
            if self._waiting:
                self._waiting[0].leads = True
                self._waiting[0].woken.set()
            else:
                self._running = False

    def _run_next(self) -> None:
        """Validate the requests at the head of the queue (the caller's first); wake them."""
        with self._lock:
            taken = [self._waiting.popleft()]
            lines = _size(taken[0].batch)
            while self._waiting and lines + _size(self._waiting[0].batch) <= self.max_lines:
                taken.append(self._waiting.popleft())
                lines += _size(taken[-1].batch)
            self.validations[len(taken)] += 1
        try:
            _validate_each(taken)
        finally:
            self._hand_over()
            for w in taken:
                w.woken.set()


def _validate_each(taken: list[_Waiting]) -> None:
    """Give each request its rows, or the error that stopped its validation.

    Should a validation of several requests fail, each is validated again alone: one request's
    failure is not its neighbours'.
    """
    con = validation_connection()
    try:
        for w, rows in zip(taken, validate_together(con, [w.batch for w in taken])):
            w.rows = rows
        return
    except Exception as exc:
        if len(taken) == 1:
            taken[0].error = exc
            return
    except BaseException as exc:  # interrupted: nobody gets rows
        for w in taken:
            w.error = exc
        raise
    for w in taken:
        try:
            w.rows = validate_together(con, [w.batch])[0]
        except Exception as exc:
            w.error = exc


# The process's one batcher: every request of the Events API validates through it.
batcher = ValidationBatcher()


def accept_events(settings: Settings, body: bytes, request_id: str, durable: bool) -> AcceptedBatch:
    """Validate an NDJSON body and persist it: valid rows to landing, invalid ones to rejected/.

    Memory stays bounded by the body's size: rows stay in Arrow and are written chunk by chunk.
    """
    rows = batcher.validate(split_lines(body)[0])
    valid = rows.column("error").null_count
    bad = len(rows) - valid
    stamp = datetime.now(timezone.utc)
    name = f"{stamp:%Y%m%dT%H%M%S%f}-{request_id or uuid.uuid4().hex}"
    landing_file = rejected_file = None
    if valid:
        landing_file = settings.landing / "events" / f"{stamp:%Y-%m-%d}" / f"{name}.ndjson"
        write_atomically(landing_file, _valid_lines(rows), durable)
    if bad:
        rejected_file = rejected_dir(settings) / f"{name}.ndjson"
        write_atomically(rejected_file, _rejected_records(rows, f"request:{request_id}"), durable)
    return AcceptedBatch(valid, bad, landing_file, rejected_file)
