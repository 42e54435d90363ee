"""Accepting a batch of events posted over HTTP (``POST /v0/events``), without touching the warehouse.

The API is not the warehouse's writer. A request's rows are validated by the one validator; the
valid rows become an immutable batch file in the landing folder (temporary name, fsync, rename),
which the landing sensor picks up like any other file; the invalid rows become a *rejected* file
(``state/rejected/``) of quarantine records that the loader moves into
``raw.user_events_quarantine`` in its next run, with the request as their source and their line
numbers in the request body.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engage.landing import REJECTED_DIR
from engage.settings import Settings
from engage.validate import Dialect, refine_error, split_lines, validate, validation_connection

@dataclass
class AcceptedBatch:
    successful_rows: int
    quarantined_rows: int
    landing_file: Path | None
    rejected_file: Path | None


def rejected_dir(settings: Settings) -> Path:
    return settings.state_dir / REJECTED_DIR


def write_immutable(path: Path, data: bytes | Iterable[bytes], durable: bool) -> None:
    """Write under a temporary name, fsync (when durable), rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        for chunk in [data] if isinstance(data, bytes) else data:
            fh.write(chunk)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def accept_events(settings: Settings, body: bytes, request_id: str, durable: bool) -> AcceptedBatch:
    """Validate an NDJSON body and persist it: valid rows to landing, invalid ones to rejected/.

    Memory stays bounded by the body's size: rows stay in Arrow and are written chunk by chunk.
    """
    con = validation_connection()
    rows = validate(con, split_lines(body)[0], Dialect.JSON).project("line_no, raw, error").to_arrow_table()
    con.unregister("lines")  # the body's lines are not kept alive until the next request
    valid = rows.column("error").null_count
    bad = len(rows) - valid
    stamp = datetime.now(timezone.utc)
    name = f"{stamp:%Y%m%dT%H%M%S%f}-{request_id or uuid.uuid4().hex}"
    landing_file = rejected_file = None
    if valid:
        landing_file = settings.landing / "events" / f"{stamp:%Y-%m-%d}" / f"{name}.ndjson"
        write_immutable(landing_file, _valid_lines(rows), durable)
    if bad:
        rejected_file = rejected_dir(settings) / f"{name}.ndjson"
        write_immutable(rejected_file, _rejected_records(rows, f"request:{request_id}"), durable)
    return AcceptedBatch(valid, bad, landing_file, rejected_file)
