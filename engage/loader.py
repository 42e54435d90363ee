"""The loader: landing files → ``raw.user_events`` + ``raw.user_events_quarantine`` + ledger.

Each file is loaded in one transaction together with its ledger row, so a crash at any point
leaves either the whole file or nothing of it, and the ledger's unique content hash makes a
second copy of the same bytes (under any name) load nothing.

Rows stream into the transaction group by group, so memory stays bounded however large the file
(DuckDB writes a transaction's large appends to the database file as they come). Two paths, one
validator (docs/PIPELINE.md, "Loading"):

* whole file: an NDJSON file (plain or gzip) whose every line is one object (``landing.LineScreen``,
  checked while the file is hashed) is read by DuckDB's own NDJSON reader, in parallel, and
  validated by the same checks inside one ``INSERT``. Kept only when every line became a valid row
  (then there is nothing to quarantine, and no line numbers are needed); otherwise the transaction
  rolls back and the file takes the fast path. ``validate._fields_of_file`` says why it is exact.
* fast: NDJSON blocks of valid UTF-8 become Arrow lines without a Python loop, and the validation
  SQL runs on the warehouse connection inside ``INSERT INTO raw.user_events SELECT ...``: valid
  rows never leave DuckDB. Only a group with fewer inserted rows than lines (blank or bad lines)
  runs the SQL again, for its quarantined rows.
* exact: every other batch (invalid UTF-8, a line too long to buffer, CSV, Parquet) is validated
  from the readers' LineBatches, as the Events API's rows are.

A file that cannot be read to its end rolls back and is loaded again as quarantine only.
"""

from __future__ import annotations

import csv
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engage import faults
from engage.db import one
from engage.landing import (REJECTED_DIR, TEXT_SUFFIXES, FileScan, LandingIndex, file_format, pending_rejected, prefetched,
                            read_batches, scan_file, sha256_of)
from engage.logs import log_event
from engage.schema import COLUMN_NAMES, DDL, LEDGER_TABLE, QUARANTINE_TABLE, RAW_TABLE
from engage.settings import Settings
from engage.validate import (INVALID_JSON, Dialect, LineBatch, file_validation_sql, refine_error, validate,
                             validation_connection, validation_sql)

logger = logging.getLogger("engage.loader")

# What a file that cannot be read to its end raises, by format.
READ_ERRORS = (OSError, EOFError, zlib.error, csv.Error, pa.ArrowException, UnicodeError, ValueError)
_COLUMNS_SQL = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
# Validated rows of the exact path gathered per insert: fewer, larger appends (DuckDB writes whole
# row groups of 122,880 rows to the database file as they fill).
EXACT_INSERT_ROWS = 262_144


@dataclass
class FileResult:
    name: str
    sha256: str
    status: str  # loaded | duplicate | unreadable
    batch_id: int | None = None
    rows_loaded: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    error: str | None = None
    whole_file_lines: int = 0  # lines read and loaded whole by DuckDB's NDJSON reader
    fast_lines: int = 0  # lines validated and inserted inside DuckDB (the fast path)
    exact_lines: int = 0  # lines validated from LineBatches (invalid UTF-8, over-long, CSV, Parquet)


@dataclass
class LoadSummary:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    @property
    def files_loaded(self) -> int:
        return sum(f.status != "duplicate" for f in self.files)

    def as_dict(self) -> dict:
        return {
            "files_seen": len(self.files),
            "files_loaded": self.files_loaded,
            "files_duplicate": len(self.files) - self.files_loaded,
            "rows_loaded": self.rows_loaded,
            "rows_quarantined": self.rows_quarantined,
            "seconds": round(self.seconds, 3),
        }


def connect_warehouse(settings: Settings) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (the pipeline is its only writer) and make sure the raw tables exist."""
    settings.ensure_dirs()
    con = duckdb.connect(str(settings.warehouse_path))
    # Bounded memory however large the file: DuckDB spills to disk past the limit.
    con.execute("SET memory_limit = ?", [settings.pipeline_memory_limit])
    con.execute("SET enable_progress_bar = false")  # the loader logs its own progress, per file
    con.execute(DDL)
    return con


@dataclass
class StagedFile:
    """A file's validated rows, written to a Parquet staging file outside the warehouse."""

    path: Path | None = None  # None when the file had no rows
    rows_loaded: int = 0
    rows_quarantined: int = 0
    last_line: int = 0
    read_error: str | None = None


def _refined(table: pa.Table) -> pa.Table:
    """Invalid-JSON rows get the parser's precise reason (computed only for those rare rows)."""
    errors = table.column("error").to_pylist() if INVALID_JSON in set(table.column("error").unique().to_pylist()) else None
    if errors is None:
        return table
    raws = table.column("raw").to_pylist()
    fixed = [refine_error(r, e) if e == INVALID_JSON else e for r, e in zip(raws, errors)]
    return table.set_column(table.schema.get_field_index("error"), "error", pa.array(fixed, table.schema.field("error").type))


class StagingWriteError(RuntimeError):
    """Writing a file's validated rows to staging failed; the load of the file stops, nothing committed."""


def validated(item: LineBatch | pa.Table, dialect: Dialect) -> pa.Table:
    """Validate a LineBatch, or a table of Arrow lines, on the validation connection: (line_no, raw,
    error, <contract columns>), invalid JSON with its precise reason."""
    con = validation_connection()
    if isinstance(item, LineBatch):
        return _refined(validate(con, item, dialect).to_arrow_table())
    con.register("lines", item)
    try:
        return _refined(con.sql(validation_sql(dialect)).to_arrow_table())
    finally:
        con.unregister("lines")


def stage_file(path: Path, staging: Path) -> StagedFile:
    """Read and validate a landing file chunk by chunk into `staging` (Parquet), bounded memory.

    Staging keeps the warehouse transaction to one large INSERT per table, which DuckDB writes
    optimistically to disk: many small inserts in one transaction would be held in memory.
    """
    staged = StagedFile()
    staging.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        dialect, batches = read_batches(path)
        for batch in batches:
            table = validated(batch, dialect)
            if len(table) == 0:
                continue
            try:
                if writer is None:
                    writer = pq.ParquetWriter(staging, table.schema, compression="lz4")
                    staged.path = staging
                writer.write_table(table)
            except OSError as exc:
                # Our own write failed (a full disk): not the landing file's fault, so not a read error.
                raise StagingWriteError(f"cannot write the staging file {staging}: {exc}") from exc
            errors = table.column("error")
            staged.rows_loaded += errors.null_count
            staged.rows_quarantined += len(errors) - errors.null_count
            staged.last_line = max(staged.last_line, pc.max(table.column("line_no")).as_py())
    except READ_ERRORS as exc:
        staged.read_error = f"file: cannot be read to its end ({type(exc).__name__}: {exc})"
    finally:
        if writer is not None:
            writer.close()
    return staged


def next_batch_id(con: duckdb.DuckDBPyConnection) -> int:
    return one(con, f"SELECT coalesce(max(batch_id), 0) + 1 FROM {LEDGER_TABLE}")[0]


class _FileRows:
    """Inserts one file's rows into the raw and quarantine tables, inside the caller's transaction."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, batch_id: int, dialect: Dialect, result: FileResult):
        self.con, self.source, self.batch_id, self.dialect, self.result = con, source, batch_id, dialect, result
        self.pending: list[pa.Table] = []  # validated rows of the exact path not inserted yet
        self.pending_rows = 0

    def _query(self, table: pa.Table, name: str, sql: str, arrow: bool = False) -> list[tuple] | pa.Table:
        """The result of `sql` with `table` as `name`. (Not con.register: a view registered inside a
        transaction keeps its Arrow data alive until the transaction ends, a whole file of it.)"""
        try:
            relation = self.con.from_arrow(table).query(name, sql)
            return relation.to_arrow_table() if arrow else relation.fetchall()
        except duckdb.TransactionException as exc:
            # In a transaction, the relation API reports a failure as "transaction is aborted", with
            # the failure itself (a full disk…) as its context: that is the one to tell.
            if isinstance(exc.__context__, duckdb.Error):
                raise exc.__context__ from None
            raise

    def fast(self, lines: pa.Table) -> None:
        """Validate and insert inside DuckDB; the quarantined rows only if some lines did not load."""
        sql = validation_sql(self.dialect)
        loaded = self._query(lines, "lines", f"INSERT INTO {RAW_TABLE} SELECT {_COLUMNS_SQL}, {self.batch_id} "
                                             f"FROM ({sql}) WHERE error IS NULL")[0][0]
        if loaded < lines.num_rows:  # blank lines, or rows to quarantine
            self.quarantine(_refined(self._query(lines, "lines", f"SELECT line_no, raw, error FROM ({sql}) "
                                                                 "WHERE error IS NOT NULL", arrow=True)))
        self.result.rows_loaded += loaded
        self.result.fast_lines += lines.num_rows

    def exact(self, batch: LineBatch) -> None:
        table = validated(batch, self.dialect)
        self.pending.append(table)
        self.pending_rows += len(table)
        self.result.exact_lines += len(batch.texts) + len(batch.rejected)
        if self.pending_rows >= EXACT_INSERT_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        valid = pc.is_null(table.column("error"))
        self.result.rows_loaded += self._query(table.filter(valid), "validated_rows",
                                               f"INSERT INTO {RAW_TABLE} SELECT {_COLUMNS_SQL}, {self.batch_id} "
                                               "FROM validated_rows")[0][0]
        self.quarantine(table.filter(pc.invert(valid)))

    def quarantine(self, rows: pa.Table) -> None:
        if len(rows) == 0:
            return
        source = "'" + self.source.replace("'", "''") + "'"  # a SQL string literal
        self._query(rows, "quarantined_rows", f"INSERT INTO {QUARANTINE_TABLE} SELECT {source}, line_no, raw, error, "
                                              f"{self.batch_id}, now() FROM quarantined_rows")
        self.result.rows_quarantined += len(rows)


class _Unreadable(Exception):
    """The file could not be read to its end while its rows were streaming in."""


def _read(path: Path) -> tuple[Dialect, Iterator[LineBatch | pa.Table]]:
    """The file's batches; an error of reading them (not of loading them) is _Unreadable."""
    try:
        dialect, batches = read_batches(path)
    except READ_ERRORS as exc:
        raise _Unreadable() from exc

    def checked():
        try:
            yield from batches
        except READ_ERRORS as exc:
            raise _Unreadable() from exc

    return dialect, checked()


def _load_rows(con: duckdb.DuckDBPyConnection, path: Path, source: str, result: FileResult) -> None:
    dialect, batches = _read(path)
    rows = _FileRows(con, source, result.batch_id, dialect, result)
    for item in prefetched(batches):
        if isinstance(item, LineBatch):
            rows.exact(item)
        else:
            rows.fast(item)
    rows.flush()


def _load_unreadable(con: duckdb.DuckDBPyConnection, path: Path, source: str, result: FileResult,
                     staging: Path) -> None:
    """Load none of the file (a repaired copy can then load whole): quarantine every row that could
    be read, plus one entry for the unreadable rest. Staged first: the rows are read again."""
    staging.unlink(missing_ok=True)
    try:
        staged = stage_file(path, staging)
        result.status = "unreadable"
        result.error = staged.read_error or "file: cannot be read to its end"
        reason = result.error + "; none of its rows were loaded: repair the file and drop it in the landing folder again"
        if staged.path is not None:
            con.execute(
                f"INSERT INTO {QUARANTINE_TABLE} SELECT ?, line_no, raw, ? || coalesce('; the row itself: ' || error, ''), "
                f"?, now() FROM read_parquet('{staging}')", [source, reason, result.batch_id])
        con.execute(
            f"INSERT INTO {QUARANTINE_TABLE} VALUES (?, ?, '', ?, ?, now())",
            [source, staged.last_line + 1, reason + " (the unreadable rest of the file)", result.batch_id],
        )
        result.rows_loaded = 0
        result.rows_quarantined = staged.rows_loaded + staged.rows_quarantined + 1
    finally:
        staging.unlink(missing_ok=True)


def _in_file_transaction(con: duckdb.DuckDBPyConnection, path: Path, result: FileResult, load) -> None:
    """Run `load` and write the file's ledger row in one transaction: all of it commits, or nothing."""
    con.execute("BEGIN TRANSACTION")
    try:
        result.batch_id = next_batch_id(con)
        load()
        faults.point("load_before_commit")
        con.execute(
            f"INSERT INTO {LEDGER_TABLE} VALUES (?, ?, ?, ?, ?, ?, now(), ?)",
            [result.batch_id, result.sha256, result.name, path.stat().st_size, result.rows_loaded,
             result.rows_quarantined, result.error],
        )
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


class _NotWhole(Exception):
    """Not every line of the file became a valid row on the whole-file path."""


def _load_whole_file(con: duckdb.DuckDBPyConnection, path: Path, result: FileResult, lines: int) -> None:
    # error(): the statement stops at the first row that is not valid (its file then takes the fast
    # path, which quarantines it with its line number and message), instead of reading the rest of
    # the file first. Only the field is named: this path reads some values as markers, not as text.
    loaded = one(con, f"INSERT INTO {RAW_TABLE} SELECT {_COLUMNS_SQL}, {result.batch_id} "
                      f"FROM ({file_validation_sql(str(path))}) WHERE CASE WHEN error IS NULL THEN TRUE "
                      "ELSE error('a line is not a valid row (' || split_part(error, ':', 1) || ')') END")[0]
    if loaded != lines:
        raise _NotWhole(f"{loaded:,} of {lines:,} lines are valid rows")
    result.rows_loaded = result.whole_file_lines = loaded


def whole_file_candidate(path: Path) -> bool:
    """NDJSON, plain or gzip: the files the whole-file path may take (once screened)."""
    fmt = file_format(path)
    return fmt is not None and TEXT_SUFFIXES.get(fmt[0]) is Dialect.JSON


def load_file(con: duckdb.DuckDBPyConnection, path: Path, scan: FileScan, source: str, staging_dir: Path) -> FileResult:
    """Load one file: its rows, its quarantine and its ledger row commit together."""
    started = time.perf_counter()
    sha256 = scan.sha256
    if scan.whole_ndjson_lines is not None:
        result = FileResult(source, sha256, "loaded")
        try:
            _in_file_transaction(con, path, result, lambda: _load_whole_file(con, path, result, scan.whole_ndjson_lines))
            result.seconds = time.perf_counter() - started
            return result
        except (_NotWhole, duckdb.Error) as exc:
            if faults.is_disk_full(exc):
                raise
            # rolled back: bad rows (which need their line numbers), or JSON DuckDB's reader refused
            log_event(logger, "whole_file_path_declined", file=source, lines=scan.whole_ndjson_lines,
                      seconds=round(time.perf_counter() - started, 3), reason=str(exc).splitlines()[0][:200])
    result = FileResult(source, sha256, "loaded")
    try:
        _in_file_transaction(con, path, result, lambda: _load_rows(con, path, source, result))
    except _Unreadable:
        # (the counts of lines each path had read before the error stay, for the log)
        result = FileResult(source, sha256, "unreadable", fast_lines=result.fast_lines, exact_lines=result.exact_lines)
        staging = staging_dir / f"{sha256}.parquet"
        _in_file_transaction(con, path, result, lambda: _load_unreadable(con, path, source, result, staging))
    result.seconds = time.perf_counter() - started
    return result


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failure; if DuckDB cannot (a failed write invalidates the database), the
    transaction dies with the connection, and the original error is the one worth raising."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error as exc:
        log_event(logger, "rollback_failed", logging.WARNING, error=str(exc).splitlines()[0][:200])


def load_rejected_file(con: duckdb.DuckDBPyConnection, path: Path, sha256: str, source: str) -> FileResult:
    """Move the quarantine records of one rejected file (from the Events API) into quarantine."""
    started = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    try:
        batch_id = next_batch_id(con)
        con.execute(
            f"INSERT INTO {QUARANTINE_TABLE} SELECT source, line_number, raw_text, error, ?, now() "
            "FROM read_json(?, format='newline_delimited', columns={'source': 'VARCHAR', "
            "'line_number': 'BIGINT', 'raw_text': 'VARCHAR', 'error': 'VARCHAR'})",
            [batch_id, str(path)],
        )
        count = one(con, f"SELECT count(*) FROM {QUARANTINE_TABLE} WHERE _batch_id = ?", [batch_id])[0]
        con.execute(
            f"INSERT INTO {LEDGER_TABLE} VALUES (?, ?, ?, ?, 0, ?, now(), NULL)",
            [batch_id, sha256, source, path.stat().st_size, count],
        )
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return FileResult(source, sha256, "loaded", batch_id, 0, count, time.perf_counter() - started)


def load_rejected(settings: Settings, con: duckdb.DuckDBPyConnection, summary: LoadSummary) -> None:
    """Rejected files are consumed: removed once their records are committed (or were already)."""
    for path in pending_rejected(settings):
        source = f"{REJECTED_DIR}/{path.name}"
        sha256 = sha256_of(path)
        if one(con, f"SELECT 1 FROM {LEDGER_TABLE} WHERE content_sha256 = ?", [sha256]) is None:
            result = load_rejected_file(con, path, sha256, source)
            summary.files.append(result)
            log_event(logger, "rejected_rows_quarantined", file=source, batch_id=result.batch_id,
                      rows_quarantined=result.rows_quarantined)
        path.unlink()


def load_pending(settings: Settings, con: duckdb.DuckDBPyConnection | None = None) -> LoadSummary:
    """Load every landing file not processed yet. The caller holds the refresh lock."""
    started = time.perf_counter()
    own = con is None
    con = con or connect_warehouse(settings)
    summary = LoadSummary()
    index = LandingIndex(settings)
    staging_dir = settings.state_dir / "staging"
    for leftover in staging_dir.glob("*.parquet"):
        leftover.unlink()  # from a load that crashed; the lock says none is running now
    try:
        pending = index.pending()
        log_event(logger, "load_started", files_pending=len(pending))
        for path in pending:
            source = index.relative(path)
            scan = scan_file(path, screen=whole_file_candidate(path))
            sha256 = scan.sha256
            known = one(con, f"SELECT name FROM {LEDGER_TABLE} WHERE content_sha256 = ?", [sha256])
            if known:
                result = FileResult(source, sha256, "duplicate")
                log_event(logger, "file_skipped_duplicate", file=source, same_content_as=known[0])
            else:
                try:
                    result = load_file(con, path, scan, source, staging_dir)
                except Exception as exc:
                    if not faults.is_disk_full(exc):
                        raise
                    log_event(logger, "load_failed", logging.ERROR, file=source, reason="disk full",
                              error=str(exc).splitlines()[0][:300], files_loaded_before=len(summary.files))
                    raise faults.DiskFull(f"loading {source} (nothing of it was committed)", str(settings.home_dir), exc) from exc
                log_event(
                    logger,
                    "file_loaded" if result.status == "loaded" else "file_unreadable",
                    logging.INFO if result.status == "loaded" else logging.WARNING,
                    file=source,
                    batch_id=result.batch_id,
                    rows_loaded=result.rows_loaded,
                    rows_quarantined=result.rows_quarantined,
                    seconds=round(result.seconds, 3),
                    rows_per_second=int((result.rows_loaded + result.rows_quarantined) / max(result.seconds, 1e-9)),
                    whole_file_lines=result.whole_file_lines,
                    fast_lines=result.fast_lines,
                    exact_lines=result.exact_lines,
                )
            summary.files.append(result)
            index.mark(path, sha256)
            index.save()
        load_rejected(settings, con, summary)
    finally:
        if own:
            con.close()
    summary.seconds = time.perf_counter() - started
    log_event(logger, "load_finished", **summary.as_dict())
    return summary
