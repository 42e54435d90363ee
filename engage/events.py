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

import orjson

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


def write_immutable(path: Path, data: bytes, durable: bool) -> None:
    """Write under a temporary name, fsync (when durable), rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
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


def accept_events(settings: Settings, body: bytes, request_id: str, durable: bool) -> AcceptedBatch:
    """Validate an NDJSON body and persist it: valid rows to landing, invalid ones to rejected/."""
    batch, _ = split_lines(body)
    rows = validate(validation_connection(), batch, Dialect.JSON).to_arrow_table().select(["line_no", "raw", "error"])
    line_numbers, raws, errors = (rows.column(i).to_pylist() for i in range(3))
    valid = [raw for raw, err in zip(raws, errors) if err is None]
    stamp = datetime.now(timezone.utc)
    name = f"{stamp:%Y%m%dT%H%M%S%f}-{request_id or uuid.uuid4().hex}"
    landing_file = rejected_file = None
    if valid:
        landing_file = settings.landing / "events" / f"{stamp:%Y-%m-%d}" / f"{name}.ndjson"
        write_immutable(landing_file, ("\n".join(valid) + "\n").encode(), durable)
    rejected = [
        orjson.dumps({"source": f"request:{request_id}", "line_number": n, "raw_text": raw,
                      "error": refine_error(raw, err)})
        for n, raw, err in zip(line_numbers, raws, errors) if err is not None
    ]
    if rejected:
        rejected_file = rejected_dir(settings) / f"{name}.ndjson"
        write_immutable(rejected_file, b"\n".join(rejected) + b"\n", durable)
    return AcceptedBatch(len(valid), len(rejected), landing_file, rejected_file)
