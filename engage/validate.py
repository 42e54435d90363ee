"""The one validator of ``user_events`` rows, shared by the file loader and the Events API.

Rows arrive as text lines (NDJSON), or as rows of CSV/Parquet turned into JSON objects. Python
does only what must be done per line (line numbers, blank lines, UTF-8); everything else (JSON
parsing, types, timestamps, defaults, error messages) runs vectorized in DuckDB, which is what
makes the loader fast enough to stream large files.

The result of validating a batch is a DuckDB relation with every non-blank input row, its line
number, its raw text, the typed columns of the contract, and ``error`` (NULL when the row is
valid, else a message naming the field and the accepted form).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engage.schema import COLUMN_NAMES, MAX_LINE_BYTES, OPTIONAL_STRINGS, REQUIRED_STRINGS, UINT32_MAX


class Dialect(str, Enum):
    """How values were written: JSON keeps its types; CSV has only strings."""

    JSON = "json"
    CSV = "csv"


TIMESTAMP_FORMS = "'YYYY-MM-DD HH:MM:SS', ISO 8601 ('2025-01-15T10:30:45.123+02:00') or Unix epoch seconds"
# Years 1 to 9999 (what Python, Arrow and the API's date parameters represent): a year 0, a BC date
# from a negative epoch or a year 10000 from an offset is an error, not a row that breaks readers later.
TIMESTAMP_MIN, TIMESTAMP_MAX = "0001-01-01 00:00:00", "9999-12-31 23:59:59"
_TIMESTAMP_RE = r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$"


@dataclass
class LineBatch:
    """Input lines with their 1-based line numbers, plus lines already rejected in Python.

    Blank lines are still in ``texts``; the SQL drops them (they are not rows).
    """

    line_numbers: range | list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    # What quarantine keeps as the raw text when it differs from `texts` (a CSV row's own text).
    originals: list[str] | None = None
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, raw text, error)


UTF8_BOM = b"\xef\xbb\xbf"


def split_lines(data: bytes, first_line_number: int = 1) -> tuple[LineBatch, int]:
    """Split a block of whole lines. Returns the batch and the number of lines consumed.

    A final line without a newline is a row. A UTF-8 byte order mark at the start of the input
    (the block holding line 1) is not part of the first row. The common case (valid UTF-8) costs
    one decode and one split; only a block with invalid UTF-8 is decoded line by line.
    """
    if first_line_number == 1 and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    if not data:
        return LineBatch(), 0
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = None
    if lines is not None:
        if not lines[-1]:
            lines.pop()  # the block ended with a newline: no line after it
        return LineBatch(range(first_line_number, first_line_number + len(lines)), lines), len(lines)
    raw_lines = data.split(b"\n")
    if not raw_lines[-1]:
        raw_lines.pop()
    batch = LineBatch()
    for offset, raw in enumerate(raw_lines):
        number = first_line_number + offset
        try:
            batch.texts.append(raw.decode("utf-8"))
            batch.line_numbers.append(number)  # type: ignore[union-attr]
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r")
            batch.rejected.append((number, text, f"invalid UTF-8 at byte {exc.start}: the row must be UTF-8 text"))
    return batch, len(raw_lines)


def _fields_of_lines() -> str:
    """CTEs ending in ``fields`` over the view ``lines(line_no, raw, original)``: every non-blank
    line, whether it is JSON and an object, each field as JSON text (``j_<field>``, whose first
    character tells its JSON type: cheaper than ``json_type``) and as a plain string
    (``s_<field>``: a second extraction is cheaper than cutting the string out of the JSON text
    with DuckDB's string functions)."""
    paths = ", ".join(f"'$.\"{name}\"'" for name in COLUMN_NAMES)
    field_columns = ", ".join(f"j[{i}]::VARCHAR AS j_{n}, s[{i}] AS s_{n}" for i, n in enumerate(COLUMN_NAMES, 1))
    return f"""rows AS (
    -- blank lines (also a lone CR) are not rows; a CRLF line ending is not part of the row.
    -- (starts_with/ends_with first: they are far cheaper than trimming every line)
    SELECT line_no, CASE WHEN ends_with(raw, chr(13)) THEN rtrim(raw, chr(13)) ELSE raw END AS raw, original
    FROM lines
    WHERE starts_with(raw, '{{') OR NOT regexp_full_match(raw, '\\s*')
), checked AS (
    SELECT line_no, raw, original,
           strlen(raw) > {MAX_LINE_BYTES} AS too_long,
           json_valid(raw) AS is_json
    FROM rows
), objects AS (
    SELECT line_no, raw, original, too_long, is_json,
           is_json AND NOT too_long AND left(ltrim(raw), 1) = '{{' AS is_object,
           CASE WHEN is_object THEN json_extract(raw, [{paths}]) END AS j,
           CASE WHEN is_object THEN json_extract_string(raw, [{paths}]) END AS s
    FROM checked
), fields AS (
    SELECT line_no, raw, original, too_long, is_json, is_object, {field_columns}
    FROM objects
)"""


def _fields_of_file(path: str) -> str:
    """CTEs ending in ``fields`` over a whole NDJSON file read by DuckDB's own reader, in parallel,
    each line parsed once straight into columns: far cheaper than the JSON functions over lines.

    For a file that ``landing.LineScreen`` passed (every line one object, none too long). It has
    no line numbers or raw text, so the loader keeps its result only when every line became a valid
    row, and otherwise loads the file line by line (loader.py). That condition makes it exact:

    * The timestamp is read as JSON text (an epoch number and a string of digits differ).
    * The other fields are read as text: a string's value, a number's text, an object's JSON.
      A value that a string or an integer gives exactly as any other JSON value would (an object,
      an array, true/false, a number other than an integer) gets the JSON text '?', which fails
      the checks, so the file goes line by line; every other value came from a JSON string or
      integer, both accepted with that value, and gets '"' (a string) as its JSON text.
    * Missing and null are NULL, as in the line-by-line SQL (where null is the text 'null').
    """
    literal = "'" + path.replace("'", "''") + "'"
    columns = ", ".join(f"'{n}': '{'JSON' if n == 'timestamp' else 'VARCHAR'}'" for n in COLUMN_NAMES)
    texts = [n for n in COLUMN_NAMES if n != "timestamp"]

    def json_kind(n: str) -> str:
        if n == "duration":
            # no value is ambiguous for the duration: what it accepts as text (digits) a JSON string
            # or integer gives with the same value, and any other JSON value fails its check
            return f"CASE WHEN {n} IS NOT NULL THEN '\"' END AS j_{n}"
        # Comparisons first (DuckDB compares a string's inlined prefix: nearly free): only a value
        # starting with { [ - a digit, or one of the words, can be ambiguous and is looked at closer.
        words = "('true', 'false', 'NaN', 'Infinity')"
        ambiguous = (f"starts_with({n}, '{{') OR starts_with({n}, '[') OR {n} IN {words} OR "
                     f"(regexp_full_match({n}, '-?([0-9][0-9.eE+-]*|Infinity)') AND NOT regexp_full_match({n}, '-?[0-9]+'))")
        maybe = (f"({n} >= '0' AND {n} < ':') OR ({n} >= '-' AND {n} < '.') OR {n} >= '{{' "
                 f"OR ({n} >= '[' AND {n} < '\\') OR {n} IN {words}")
        return (f"CASE WHEN {n} IS NULL THEN NULL WHEN ({maybe}) AND ({ambiguous}) THEN '?' "
                f"ELSE '\"' END AS j_{n}")

    return f"""file_rows AS (
    SELECT "timestamp"::VARCHAR AS j_timestamp, {", ".join(f'"{n}" AS {n}' for n in texts)}
    FROM read_ndjson({literal}, columns={{{columns}}}, format='newline_delimited')
), fields AS (
    SELECT NULL::BIGINT AS line_no, NULL::VARCHAR AS raw, NULL::VARCHAR AS original, FALSE AS too_long,
           TRUE AS is_json, TRUE AS is_object, j_timestamp,
           -- a JSON string without a backslash has no quote inside: its value is between the quotes
           CASE WHEN NOT starts_with(j_timestamp, '"') THEN j_timestamp
                WHEN contains(j_timestamp, '\\') THEN json_extract_string(j_timestamp, '$')
                ELSE substr(j_timestamp, 2, length(j_timestamp) - 2) END AS s_timestamp,
           {", ".join(f"{json_kind(n)}, {n} AS s_{n}" for n in texts)}
    FROM file_rows
)"""


def _validation_sql(dialect: Dialect, fields_sql: str) -> str:
    """SQL over the CTE ``fields`` (``_fields_of_lines`` or ``_fields_of_file`` above) producing typed
    columns and the first error of each row."""
    def is_missing(n: str) -> str:
        return f"(j_{n} IS NULL OR j_{n} = 'null')"

    def is_int(n: str) -> str:
        return f"regexp_full_match(j_{n}, '-?[0-9]+')"

    def kind(n: str) -> str:
        # JSON type named from the first character of the value's text, for error messages.
        return (
            f"CASE left(j_{n}, 1) WHEN '{{' THEN 'an object' WHEN '[' THEN 'an array' "
            f"WHEN 't' THEN 'a boolean' WHEN 'f' THEN 'a boolean' ELSE 'a number' END"
        )

    # A string column accepts a JSON string, or a JSON integer (kept as its decimal text);
    # computed once per field in the `strings` CTE as str_<field>.
    def string_expression(n: str) -> str:
        return f"CASE WHEN left(j_{n}, 1) = '\"' THEN s_{n} WHEN {is_int(n)} THEN s_{n} END AS str_{n}"

    def string_value(n: str) -> str:
        return f"str_{n}"

    required_checks = []
    for n in REQUIRED_STRINGS:
        required_checks += [
            f"WHEN {is_missing(n)} THEN '{n}: missing; it is required (a non-empty string)'",
            f"WHEN {string_value(n)} IS NULL THEN '{n}: must be a string, got ' || {kind(n)}",
            f"WHEN {string_value(n)} = '' THEN '{n}: empty; it is required (a non-empty string)'",
        ]
    optional_checks = [
        f"WHEN NOT {is_missing(n)} AND {string_value(n)} IS NULL THEN '{n}: must be a string, got ' || {kind(n)}"
        for n in OPTIONAL_STRINGS
    ]
    required_columns = ", ".join(f'{string_value(n)} AS "{n}"' for n in REQUIRED_STRINGS)
    optional_columns = ", ".join(f"coalesce({string_value(n)}, '') AS \"{n}\"" for n in OPTIONAL_STRINGS)
    timestamp_forms = TIMESTAMP_FORMS.replace("'", "''")
    epoch_allowed = "TRUE" if dialect is Dialect.JSON else "FALSE"
    empty_duration_ok = "TRUE" if dialect is Dialect.CSV else "FALSE"
    return f"""
WITH {fields_sql}, strings AS (
    SELECT *, {", ".join(string_expression(n) for n in (*REQUIRED_STRINGS, *OPTIONAL_STRINGS))}
    FROM fields
), typed AS (
    SELECT *,
        -- The common form 'YYYY-MM-DD HH:MM:SS' by a cast, kept only when the value is exactly how
        -- that timestamp prints (so it accepts nothing the regular expression would not).
        CASE WHEN left(j_timestamp, 1) = '"' AND strlen(s_timestamp) = 19
             THEN try_cast(s_timestamp AS TIMESTAMP) END AS ts_cast,
        CASE WHEN left(j_timestamp, 1) = '"' AND (ts_cast IS NULL OR ts_cast::VARCHAR <> s_timestamp)
             THEN regexp_extract(s_timestamp, '{_TIMESTAMP_RE}', ['day', 'time', 'fraction', 'offset']) END AS ts_parts,
        CASE WHEN {epoch_allowed} AND {is_int("timestamp")}
             THEN try(to_timestamp(try_cast(j_timestamp AS BIGINT))::TIMESTAMP) END AS ts_epoch,
        CASE WHEN {is_missing("duration")} THEN 0::UBIGINT
             WHEN regexp_full_match(j_duration, '[0-9]{{1,20}}') THEN try_cast(j_duration AS UBIGINT)
             WHEN left(j_duration, 1) = '"' AND s_duration = '' AND {empty_duration_ok} THEN 0::UBIGINT
             WHEN left(j_duration, 1) = '"' AND regexp_full_match(s_duration, '0*[0-9]{{1,20}}')  -- "0042" is 42
                THEN try_cast(s_duration AS UBIGINT)
        END AS duration_value
    FROM strings
), offsets AS (
    SELECT *,
        -- '+05:45' -> 345 minutes; hours above 23 or minutes above 59 make the offset invalid
        CASE WHEN try_cast(ts_parts.offset[2:3] AS INT) <= 23 AND try_cast(ts_parts.offset[5:6] AS INT) <= 59
             THEN (CASE WHEN ts_parts.offset[1] = '-' THEN -1 ELSE 1 END)
                  * (try_cast(ts_parts.offset[2:3] AS INT) * 60 + try_cast(ts_parts.offset[5:6] AS INT)) END AS offset_minutes
    FROM typed
), timestamps AS (
    SELECT *,
        CASE WHEN ts_epoch IS NOT NULL THEN ts_epoch
             WHEN ts_parts IS NULL AND ts_cast IS NOT NULL THEN ts_cast
             WHEN ts_parts.day <> '' THEN
                 try_strptime(ts_parts.day || ' ' || ts_parts.time, '%Y-%m-%d %H:%M:%S')
                 - coalesce(offset_minutes, 0) * INTERVAL 1 MINUTE
        END AS ts_value,
        coalesce(offset_minutes IS NULL AND ts_parts.offset NOT IN ('', 'Z'), FALSE) AS bad_offset
    FROM offsets
)
SELECT line_no, coalesce(original, raw) AS raw,
    CASE
        WHEN too_long THEN 'row: line is ' || strlen(raw) || ' bytes, over the {MAX_LINE_BYTES}-byte limit'
        WHEN NOT is_json THEN 'row: invalid JSON'
        WHEN NOT is_object THEN 'row: must be a JSON object, got ' || CASE left(ltrim(raw), 1)
             WHEN '[' THEN 'an array' WHEN '"' THEN 'a string' WHEN 'n' THEN 'null' WHEN 't' THEN 'a boolean'
             WHEN 'f' THEN 'a boolean' ELSE 'a number' END
        WHEN {is_missing("timestamp")} THEN 'timestamp: missing; it is required ({timestamp_forms})'
        WHEN ts_value IS NULL OR bad_offset THEN 'timestamp: ' || left(j_timestamp, 60)
             || ' is not a valid UTC date-time; use {timestamp_forms}'
             || CASE WHEN {epoch_allowed} THEN '' ELSE ' (epoch numbers are not accepted in CSV)' END
        WHEN NOT ts_value BETWEEN TIMESTAMP '{TIMESTAMP_MIN}' AND TIMESTAMP '{TIMESTAMP_MAX}' THEN 'timestamp: '
             || left(j_timestamp, 60) || ' is out of range: UTC date-times from {TIMESTAMP_MIN} to {TIMESTAMP_MAX} are accepted'
        {" ".join(required_checks)}
        WHEN duration_value IS NULL OR duration_value > {UINT32_MAX} THEN 'duration: ' || left(j_duration, 60)
             || ' is not a whole number of seconds from 0 to {UINT32_MAX} (a JSON integer or a string of digits)'
        {" ".join(optional_checks)}
    END AS error,
    date_trunc('second', ts_value) AS "timestamp",
    {required_columns},
    try_cast(duration_value AS UINTEGER) AS duration,
    {optional_columns}
FROM timestamps
"""


_SQL = {d: _validation_sql(d, _fields_of_lines()) for d in Dialect}


def file_validation_sql(path: str) -> str:
    """The validation SQL over a whole NDJSON file (see ``_fields_of_file``)."""
    return _validation_sql(Dialect.JSON, _fields_of_file(path))


def validation_sql(dialect: Dialect) -> str:
    """The validation SQL over a view ``lines(line_no, raw, original)`` that the caller registers
    (the loader's fast path registers Arrow lines on the warehouse connection and inserts from it)."""
    return _SQL[dialect]


_local = threading.local()


def validation_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB per thread, for validation only: it never holds the warehouse, and a
    loader's long transaction keeps none of the validation's intermediate data."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect(config={"threads": 2})
    return con
VALID_COLUMNS_SQL = ", ".join(f'"{n}"' for n in COLUMN_NAMES)


def _register_input(con: duckdb.DuckDBPyConnection, batch: LineBatch, dialect: Dialect) -> str:
    """Register ``batch`` on ``con`` as the view ``lines`` (and ``pre_errors``); the SQL validating it."""
    numbers = pa.array(batch.line_numbers, pa.int64())
    texts = pa.array(batch.texts, pa.large_string())
    originals = (pa.array(batch.originals, pa.large_string()) if batch.originals is not None
                 else pa.nulls(len(batch.texts), pa.large_string()))
    if batch.rejected:
        numbers = pa.concat_arrays([numbers, pa.array([n for n, _, _ in batch.rejected], pa.int64())])
        texts = pa.concat_arrays([texts, pa.array([raw for _, raw, _ in batch.rejected], pa.large_string())])
        originals = pa.concat_arrays([originals, pa.nulls(len(batch.rejected), pa.large_string())])
    con.register("lines", pa.table({"line_no": numbers, "raw": texts, "original": originals}))
    if not batch.rejected:
        return _SQL[dialect]
    # Rows rejected before SQL (invalid UTF-8) keep their Python error message.
    pre = pa.table(
        {
            "line_no": pa.array([n for n, _, _ in batch.rejected], pa.int64()),
            "pre_error": pa.array([e for _, _, e in batch.rejected], pa.string()),
        }
    )
    con.register("pre_errors", pre)
    cols = ", ".join(f'v."{n}"' for n in COLUMN_NAMES)
    return (f"SELECT v.line_no, v.raw, coalesce(p.pre_error, v.error) AS error, {cols} "
            f"FROM ({_SQL[dialect]}) v LEFT JOIN pre_errors p USING (line_no)")


def validate(con: duckdb.DuckDBPyConnection, batch: LineBatch, dialect: Dialect = Dialect.JSON) -> duckdb.DuckDBPyRelation:
    """Validate a batch; returns a relation (line_no, raw, error, <contract columns>).

    The relation reads a view named ``lines`` registered on ``con``; consume it before the
    next call on the same connection.
    """
    return con.sql(_register_input(con, batch, dialect))


def _outcome_statement(sql: str) -> duckdb.Statement:
    """``SELECT line_no, raw, error`` of a validation SQL, parsed once per thread (parsing it costs
    milliseconds, as much as validating ~1,000 rows)."""
    statements = getattr(_local, "outcome_statements", None)
    if statements is None:
        statements = _local.outcome_statements = {}
    if sql not in statements:
        statements[sql] = duckdb.extract_statements(f"SELECT line_no, raw, error FROM ({sql})")[0]
    return statements[sql]


# con.execute(...).to_arrow_table() reads the result back through one more (trivial) statement; still
# cheaper than a relation, which binds the validation SQL twice (once for its schema, once to run).
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning,
                        module=__name__)


def _numbered_apart(batches: Sequence[LineBatch]) -> tuple[LineBatch, list[int]]:
    """One batch of all the lines, each batch's line numbers shifted past the previous batches' last
    line; and the shifts, plus the last line number at the end."""
    combined = LineBatch(originals=[] if any(b.originals is not None for b in batches) else None)
    shifts = [0]
    for b in batches:
        shift = shifts[-1]
        combined.line_numbers.extend(n + shift for n in b.line_numbers)  # type: ignore[union-attr]
        combined.texts.extend(b.texts)
        if combined.originals is not None:
            combined.originals.extend(b.originals if b.originals is not None else [None] * len(b.texts))
        combined.rejected.extend((n + shift, raw, err) for n, raw, err in b.rejected)
        shifts.append(shift + max(max(b.line_numbers, default=0), max((n for n, _, _ in b.rejected), default=0)))
    return combined, shifts


def validate_together(con: duckdb.DuckDBPyConnection, batches: Sequence[LineBatch],
                      dialect: Dialect = Dialect.JSON) -> list[pa.Table]:
    """Validate several batches with one run of the validation SQL: its fixed cost (parsing,
    binding and planning, ~15-20 ms) is paid once for all of them.

    Returns, for each batch, a table (line_no, raw, error) of its rows in line order, with its own
    line numbers: the same rows and messages as ``validate`` gives for the batch alone. Line
    numbers are shifted apart in the statement, so rows of different batches never meet.
    """
    combined, shifts = (batches[0], [0]) if len(batches) == 1 else _numbered_apart(batches)
    sql = _register_input(con, combined, dialect)
    try:
        rows = con.execute(_outcome_statement(sql)).to_arrow_table()
    finally:
        # The lines are not kept alive until the next call.
        con.unregister("lines")
        if combined.rejected:
            con.unregister("pre_errors")
    rows = rows.sort_by("line_no")
    if len(batches) == 1:
        return [rows]
    line_no = rows.column("line_no")
    out = []
    for start, end in zip(shifts, shifts[1:]):
        part = rows.filter(pc.and_(pc.greater(line_no, start), pc.less_equal(line_no, end)))
        out.append(part.set_column(0, "line_no", pc.subtract(part.column("line_no"), start)))
    return out


INVALID_JSON = "row: invalid JSON"


def refine_error(raw: str, error: str) -> str:
    """The final message of a rejected row: invalid JSON gets the parser's precise reason."""
    return describe_json_error(raw) if error == INVALID_JSON else error


def describe_json_error(raw: str) -> str:
    """A precise message for a line that is not valid JSON (computed only for the rare bad rows)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"row: invalid JSON ({exc.msg} at character {exc.pos}); each line must be one JSON object"
    return "row: invalid JSON; each line must be one JSON object"
