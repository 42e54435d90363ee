"""The ``user_events`` data source: its columns and types, declared once.

Used by the validator (what is accepted), the warehouse DDL (raw and quarantine tables) and docs.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASOURCE = "user_events"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # DuckDB type in the raw table
    required: bool


COLUMNS: tuple[Column, ...] = (
    Column("timestamp", "TIMESTAMP", True),
    Column("user_id", "VARCHAR", True),
    Column("event_type", "VARCHAR", True),
    Column("session_id", "VARCHAR", True),
    Column("duration", "UINTEGER", False),
    Column("device", "VARCHAR", False),
    Column("platform", "VARCHAR", False),
    Column("page", "VARCHAR", False),
    Column("country", "VARCHAR", False),
    Column("region", "VARCHAR", False),
    Column("city", "VARCHAR", False),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
REQUIRED_STRINGS = tuple(c.name for c in COLUMNS if c.required and c.sql_type == "VARCHAR")
OPTIONAL_STRINGS = tuple(c.name for c in COLUMNS if not c.required and c.sql_type == "VARCHAR")

MAX_LINE_BYTES = 64 * 1024
UINT32_MAX = 2**32 - 1

# Raw and bookkeeping tables in the warehouse (schema `raw`).
RAW_SCHEMA = "raw"
RAW_TABLE = f"{RAW_SCHEMA}.user_events"
QUARANTINE_TABLE = f"{RAW_SCHEMA}.user_events_quarantine"
LEDGER_TABLE = f"{RAW_SCHEMA}.loaded_files"

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA};
CREATE TABLE IF NOT EXISTS {RAW_TABLE} (
    {", ".join(f"{c.name} {c.sql_type} NOT NULL" for c in COLUMNS)},
    _batch_id BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} (
    source VARCHAR NOT NULL,
    line_number BIGINT NOT NULL,
    raw_text VARCHAR NOT NULL,
    error VARCHAR NOT NULL,
    _batch_id BIGINT NOT NULL,
    quarantined_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
    batch_id BIGINT PRIMARY KEY,
    content_sha256 VARCHAR NOT NULL UNIQUE,
    name VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    error VARCHAR  -- set when the file could not be read whole: then none of its rows are loaded
);
"""
