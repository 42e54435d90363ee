"""Small DuckDB helpers."""

from __future__ import annotations

import duckdb


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """The first row of a query, reading the result to its end (DuckDB 2 refuses new work on a
    connection whose previous result was left half-read)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None
