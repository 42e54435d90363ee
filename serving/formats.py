"""Output formats of a pipe result: json (Tinybird's shape), csv, ndjson, parquet."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import orjson

FORMATS: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def json_bytes(obj: Any) -> bytes:
    return orjson.dumps(obj)


@dataclass(frozen=True)
class Column:
    """An output column: its name and ClickHouse-style type (DateTime, String, UInt64, Float64,
    Nullable(Float64)); ``when`` documents columns present only for some parameter values."""

    name: str
    type: str
    description: str = ""
    when: str | None = None


@dataclass
class Result:
    columns: tuple[Column, ...]
    rows: list[tuple]  # values in column order; DateTime as naive UTC datetime
    rows_before_limit: int
    rows_read: int = 0
    bytes_read: int = 0
    statistics: dict[str, Any] = field(default_factory=dict)
    # Rendered output per format, made once: the result cache's copies of a result share this dict,
    # so a cached answer is not rendered again (only the JSON statistics differ per request).
    rendered: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


def _once(result: Result, fmt: str, render: Callable[[Result], bytes]) -> bytes:
    body = result.rendered.get(fmt)
    if body is None:
        body = result.rendered[fmt] = render(result)
    return body


def _fmt_datetime(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(" ")


def _text_rows(result: Result) -> list[tuple]:
    """Rows with DateTime values as 'YYYY-MM-DD HH:MM:SS' strings."""
    dt_cols = [i for i, c in enumerate(result.columns) if c.type in ("DateTime", "Nullable(DateTime)")]
    if not dt_cols:
        return result.rows
    out = []
    cache: dict[datetime, str | None] = {}
    for row in result.rows:
        row = list(row)
        for i in dt_cols:
            v = row[i]
            s = cache.get(v)
            if s is None:
                s = cache[v] = _fmt_datetime(v)
            row[i] = s
        out.append(tuple(row))
    return out


def render_json(result: Result) -> bytes:
    """Tinybird's JSON shape; ``statistics`` (this request's) last, after the rendered-once rest."""
    return _once(result, "json", _json_without_statistics) + orjson.dumps(result.statistics) + b"}"


def _json_without_statistics(result: Result) -> bytes:
    """``{"meta":…,"data":…,"rows":…,"rows_before_limit_at_least":…,"statistics":`` (open)."""
    names = [c.name for c in result.columns]
    closed = orjson.dumps({
        "meta": [{"name": c.name, "type": c.type} for c in result.columns],
        "data": [dict(zip(names, row)) for row in _text_rows(result)],
        "rows": len(result.rows),
        "rows_before_limit_at_least": result.rows_before_limit,
    })
    return closed[:-1] + b',"statistics":'


def render_ndjson(result: Result) -> bytes:
    return _once(result, "ndjson", _ndjson)


def _ndjson(result: Result) -> bytes:
    names = [c.name for c in result.columns]
    dumps = orjson.dumps
    return b"".join(dumps(dict(zip(names, row))) + b"\n" for row in _text_rows(result))


def render_csv(result: Result) -> bytes:
    return _once(result, "csv", _csv)


def _csv(result: Result) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.name for c in result.columns])
    w.writerows(_text_rows(result))  # None -> empty field
    return buf.getvalue().encode()


def _arrow_type(t: str):
    import pyarrow as pa

    base = t.removeprefix("Nullable(").removesuffix(")")
    return {
        "DateTime": pa.timestamp("ms"),  # Parquet has no seconds unit
        "String": pa.string(),
        "UInt64": pa.uint64(),
        "Float64": pa.float64(),
    }[base]


def render_parquet(result: Result) -> bytes:
    return _once(result, "parquet", _parquet)


def _parquet(result: Result) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(zip(*result.rows)) if result.rows else [() for _ in result.columns]
    table = pa.table(
        [pa.array(list(values), type=_arrow_type(c.type)) for c, values in zip(result.columns, cols)],
        schema=pa.schema([
            pa.field(c.name, _arrow_type(c.type), nullable=c.type.startswith("Nullable"))
            for c in result.columns
        ]),
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


RENDERERS: dict[str, Callable[[Result], bytes]] = {
    "json": render_json,
    "csv": render_csv,
    "ndjson": render_ndjson,
    "parquet": render_parquet,
}
