"""The landing folder: which files are ready, which are new, and how each format is read.

Files still being written (names starting with ``.`` or ending in ``.tmp``/``.part``) and files of
other types are ignored. The landing index (``state/landing_index.json``) remembers the files
already processed by (size, mtime), so the sensor can tell new files apart without opening the
warehouse (which the pipeline may be writing) and the loader hashes each file only once.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import mmap
import os
import queue
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from engage.files import write_atomically
from engage.schema import MAX_LINE_BYTES
from engage.settings import Settings
from engage.validate import UTF8_BOM, Dialect, LineBatch, split_lines

TEXT_SUFFIXES = {".ndjson": Dialect.JSON, ".jsonl": Dialect.JSON, ".json": Dialect.JSON, ".csv": Dialect.CSV}
IN_PROGRESS_SUFFIXES = (".tmp", ".part")
CHUNK_BYTES = 8 * 1024 * 1024
# Fast blocks are handed to the loader in groups of two of DuckDB's row groups (the last group of a
# file fewer lines): one validation query and insert per group (planning it costs ~20 ms), each
# row group's lines an Arrow record batch, which DuckDB's threads scan in parallel. Appended in
# whole row groups, the rows are written once; any partial one is rewritten by the next checkpoint.
ROW_GROUP_ROWS = 122_880
FAST_GROUP_LINES = 2 * ROW_GROUP_ROWS
CSV_BATCH_ROWS = 50_000
PARQUET_BATCH_ROWS = 65_536
INDEX_FILE = "landing_index.json"
REJECTED_DIR = "rejected"  # under state/: quarantine records written by the Events API


class UnreadableFile(Exception):
    """The file's bytes cannot be read as its format (truncated gzip, corrupt Parquet…)."""

    def __init__(self, message: str, lines_read: int):
        super().__init__(message)
        self.lines_read = lines_read


def file_format(path: Path) -> tuple[str, bool] | None:
    """(format, gzipped) of a landing file, or None when the file is not one to load."""
    name = path.name
    if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES):
        return None
    gz = name.endswith(".gz")
    suffix = Path(name[:-3]).suffix if gz else path.suffix
    suffix = suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return suffix, gz
    if suffix == ".parquet" and not gz:
        return suffix, False
    return None


def ready_files(landing: Path) -> list[Path]:
    """Every loadable file under the landing folder (subfolders included), oldest first."""
    found = []
    for root, dirs, files in os.walk(landing):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(root) / name
            if file_format(path) is not None:
                try:
                    found.append((path.stat().st_mtime_ns, str(path), path))
                except FileNotFoundError:
                    continue  # renamed or removed while we looked
    return [p for _, _, p in sorted(found)]


def file_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class LandingIndex:
    """Files already processed (loaded, or found to be copies of loaded content)."""

    def __init__(self, settings: Settings):
        self.path = settings.state_dir / INDEX_FILE
        self.landing = settings.landing
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            self.entries = {}

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.landing))

    def is_processed(self, path: Path) -> bool:
        entry = self.entries.get(self.relative(path))
        try:
            return entry is not None and entry[:2] == file_key(path)
        except FileNotFoundError:
            return True

    def pending(self) -> list[Path]:
        return [p for p in ready_files(self.landing) if not self.is_processed(p)]

    def mark(self, path: Path, sha256: str) -> None:
        self.entries[self.relative(path)] = [*file_key(path), sha256]

    def save(self) -> None:
        # not fsynced: a lost index only means files are hashed again (the ledger decides what loads)
        write_atomically(self.path, json.dumps(self.entries), durable=False)


def pending_rejected(settings: Settings) -> list[Path]:
    """Rejected-row files from the Events API waiting to be moved into the quarantine table."""
    folder = settings.state_dir / REJECTED_DIR
    return sorted(p for p in folder.glob("*.ndjson")) if folder.exists() else []


@dataclass
class FileScan:
    sha256: str  # of the file's bytes: the ledger's exactly-once key
    whole_ndjson_lines: int | None = None  # lines, when screened and LineScreen passed them all


def scan_file(path: Path, screen: bool = False) -> FileScan:
    """The file's SHA-256 and, when `screen`, whether every line is one JSON object on its own
    (``LineScreen``; of the decompressed text for a .gz), in one pass over a memory map: no copy of
    the file into Python, the hash in a second thread while this one screens (both without the
    GIL), and each window of the map let go once done with, so the pages of a large file do not
    pile up in this process's memory."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    if size == 0:
        return FileScan(digest.hexdigest())
    line_screen = LineScreen() if screen else None
    gz = path.name.endswith(".gz")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gz else None
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = np.frombuffer(mapped, np.uint8)
        view = memoryview(mapped)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
                for window in range(0, size, CHUNK_BYTES):
                    end = min(window + CHUNK_BYTES, size)
                    hashed = hasher.submit(digest.update, view[window:end])
                    if line_screen is not None:
                        ok = (_screen_gzip(line_screen, inflate, view[window:end], last=end == size) if gz
                              else line_screen.feed(data, window, end, last=end == size))
                        if not ok:
                            line_screen = None
                    hashed.result()
                    mapped.madvise(mmap.MADV_DONTNEED, window, end - window)
        finally:
            view.release()
            del data
    return FileScan(digest.hexdigest(), line_screen.lines or None if line_screen is not None else None)


def _screen_gzip(line_screen: LineScreen, inflate, compressed: memoryview, last: bool) -> bool:
    """Inflate the next window of a gzip file, at most CHUNK_BYTES at a time, into the screen. Only
    a single complete gzip member passes (DuckDB's reader then reads the same text); anything else
    (a truncated or damaged file, several members) is left to the line paths."""
    try:
        pending = compressed
        while True:
            text = inflate.decompress(pending, CHUNK_BYTES)
            pending = inflate.unconsumed_tail
            if not line_screen.feed_stream(text, last=False):
                return False
            if not pending:
                break
        if not last:
            return True
        return line_screen.feed_stream(inflate.flush(), last=True) and inflate.eof and not inflate.unused_data
    except zlib.error:
        return False


def sha256_of(path: Path) -> str:
    return scan_file(path).sha256


def _open_binary(path: Path, gz: bool):
    return gzip.open(path, "rb") if gz else open(path, "rb")


class _LineBlocks:
    """Stream a binary file as blocks of whole lines; memory stays bounded even for one huge line."""

    def __init__(self, stream):
        self.stream = stream
        self.pushed_back = b""  # bytes read past the end of a skipped over-long line

    def read(self) -> bytes:
        if self.pushed_back:
            data, self.pushed_back = self.pushed_back, b""
            return data
        return self.stream.read(CHUNK_BYTES)

    def skip_rest_of_line(self) -> tuple[int, bool]:
        """Consume the rest of an over-long line: (bytes skipped, whether a newline ended it)."""
        skipped = 0
        while block := self.read():
            cut = block.find(b"\n")
            if cut >= 0:
                self.pushed_back = block[cut + 1 :]
                return skipped + cut, True
            skipped += len(block)
        return skipped, False

    def batches(self, line_no: int = 1) -> Iterator[LineBatch | pa.RecordBatch]:
        carry = b""
        while block := self.read():
            data = carry + block
            cut = data.rfind(b"\n")
            if cut >= 0:
                batch, consumed = whole_lines(data[: cut + 1], line_no)
                line_no += consumed
                carry = data[cut + 1 :]
                yield batch
            elif len(data) <= CHUNK_BYTES + MAX_LINE_BYTES:
                carry = data
            else:
                # A line longer than any valid row: quarantine its start, skip to its end.
                rest, ended = self.skip_rest_of_line()
                size = len(data) + rest
                head = data[:MAX_LINE_BYTES].decode("utf-8", "backslashreplace")
                batch = LineBatch()
                batch.rejected.append(
                    (line_no, f"{head}…[truncated: the line is {size} bytes]",
                     f"row: line is {size} bytes, over the {MAX_LINE_BYTES}-byte limit")
                )
                yield batch
                line_no += 1
                carry = b""
                if not ended:
                    return
        if carry:
            batch, _ = whole_lines(carry + b"\n", line_no)  # a last line without a newline is a row
            yield batch


LINE_SCHEMA = pa.schema([("line_no", pa.int64()), ("raw", pa.large_string()), ("original", pa.large_string())])


def fast_lines(data: bytes, first_line_number: int) -> pa.RecordBatch | None:
    """A block of whole lines (each ending with a newline) as the validator's input, without a
    Python loop: ``lines(line_no, raw, original)`` over one copy of the bytes with the newlines
    taken out. None when the block is not valid UTF-8 (``split_lines`` then finds the bad lines)."""
    if first_line_number == 1 and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    count = len(newlines)
    offsets = np.empty(count + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = newlines - np.arange(count)  # line i ends where its newline was, less the i before it
    texts = pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data.replace(b"\n", b"")))
    try:
        texts.validate(full=True)  # UTF-8 (DuckDB would take invalid bytes as they are)
    except pa.ArrowInvalid:
        return None
    numbers = pa.array(np.arange(first_line_number, first_line_number + count, dtype=np.int64))
    return pa.record_batch([numbers, texts, pa.nulls(count, pa.large_string())], schema=LINE_SCHEMA)


class LineScreen:
    """Whether NDJSON bytes, fed window by window, have every line one JSON object on its own:
    starting with '{' and ending with '}' (before an optional CR), at most MAX_LINE_BYTES, a BOM
    allowed at the start. Such a file may be loaded whole by DuckDB's NDJSON reader (loader.py);
    any other (blank lines, over-long lines, anything else) is read line by line."""

    def __init__(self):
        self.lines = 0
        self.start = -1  # where the line being screened starts (-1: not known before the first window)
        # once: allocating per window costs more than the scan
        self.is_newline = np.empty(CHUNK_BYTES + MAX_LINE_BYTES + 1, bool)
        self.carry = b""  # feed_stream: the start of a line that goes on in the next chunk

    def feed(self, data: np.ndarray, window: int, end: int, last: bool) -> bool:
        """Screen data[window:end], the next window (`last`: the end of the input); False as soon as
        a line fails."""
        if self.start < 0:
            self.start = len(UTF8_BOM) if data[:len(UTF8_BOM)].tobytes() == UTF8_BOM else 0
        part = data[window:end]
        ends = np.flatnonzero(np.equal(part, 10, out=self.is_newline[:len(part)])) + window
        if last and (len(ends) == 0 or ends[-1] != end - 1) and end > self.start:
            ends = np.append(ends, end)  # a final line without a newline
        if len(ends) == 0:
            return end - self.start <= MAX_LINE_BYTES
        starts = np.concatenate(([self.start], ends[:-1] + 1))
        closing = ends - 1 - (data[ends - 1] == 13)  # the byte before a CR LF's CR
        if (np.any(ends - starts > MAX_LINE_BYTES) or np.any(ends - starts < 2)
                or np.any(data[starts] != ord("{")) or np.any(data[closing] != ord("}"))):
            return False
        self.lines += len(ends)
        self.start = int(ends[-1]) + 1
        return True

    def feed_stream(self, chunk: bytes, last: bool) -> bool:
        """The next chunk of a stream (decompressed gzip), whose lines may go on in the next chunk."""
        data = np.frombuffer(self.carry + chunk, np.uint8)
        if self.start >= 0:
            self.start = 0  # the carried line starts this buffer
        if not self.feed(data, 0, len(data), last):
            return False
        self.carry = data[self.start:].tobytes() if not last else b""
        return True


def whole_lines(data: bytes, first_line_number: int) -> tuple[LineBatch | pa.RecordBatch, int]:
    """A block of whole lines (each ending with a newline) and the number of lines: Arrow lines
    when the block is valid UTF-8 (the fast path), else a LineBatch split line by line."""
    lines = fast_lines(data, first_line_number)
    if lines is not None:
        return lines, lines.num_rows
    return split_lines(data, first_line_number)


def _line_group(batches: list[pa.RecordBatch]) -> pa.Table:
    """Blocks of lines as one table of record batches of ROW_GROUP_ROWS lines (one copy)."""
    lines = pa.Table.from_batches(batches, LINE_SCHEMA).combine_chunks()
    return pa.Table.from_batches(lines.to_batches(max_chunksize=ROW_GROUP_ROWS), LINE_SCHEMA)


def read_json_lines(path: Path, gz: bool) -> Iterator[LineBatch | pa.Table]:
    """The lines of an NDJSON file: consecutive fast blocks as Arrow tables of FAST_GROUP_LINES
    lines, the other blocks (invalid UTF-8, over-long lines) as LineBatches."""
    with _open_binary(path, gz) as stream:
        group: list[pa.RecordBatch] = []
        count = 0
        for batch in _LineBlocks(stream).batches():
            if isinstance(batch, LineBatch):
                if group:
                    yield _line_group(group)
                    group, count = [], 0
                yield batch
                continue
            group.append(batch)
            count += batch.num_rows
            while count >= FAST_GROUP_LINES:  # cut at exactly FAST_GROUP_LINES (slices are not copies)
                last = group.pop()
                keep = last.num_rows - (count - FAST_GROUP_LINES)
                yield _line_group([*group, last.slice(0, keep)])
                group, count = [last.slice(keep)], last.num_rows - keep
        if count:
            yield _line_group(group)


def prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """``items`` produced by a thread one step ahead of the consumer, so that reading and splitting
    the next block (numpy, zlib and file reads release the GIL) overlaps the work on this one.
    Exceptions of the producer are raised in the consumer; a consumer that stops early stops it."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer
            slots.put((done, exc))

    thread = threading.Thread(target=produce, name="landing-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = slots.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                slots.get_nowait()  # unblock a producer waiting to put
            except queue.Empty:
                thread.join(0.1)


def _printable(text: str) -> str:
    """Text read with ``surrogateescape`` as valid UTF-8: invalid bytes become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_csv_rows(path: Path, gz: bool) -> Iterator[LineBatch]:
    """RFC 4180 CSV with a header row; each row becomes a JSON object of strings for the validator.

    Lines are read at most MAX_LINE_BYTES characters at a time, so memory stays bounded: a longer
    line is skipped to its end and its row quarantined by its start, like an over-long NDJSON line.
    """
    with _open_binary(path, gz) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        consumed: list[str] = []
        overlong: list[int] = []  # bytes of each over-long line of the current record

        def lines():
            while line := text.readline(MAX_LINE_BYTES + 1):
                if len(line) > MAX_LINE_BYTES and line[-1] not in "\r\n":
                    size, tail = len(line.encode("utf-8", "surrogateescape")), line
                    while tail[-1] not in "\r\n" and (tail := text.readline(CHUNK_BYTES)):
                        size += len(tail.encode("utf-8", "surrogateescape"))
                    size -= len(tail) - len(tail.rstrip("\r\n"))  # the line ending is not part of the line
                    overlong.append(size)
                    consumed.append(f"{line[:MAX_LINE_BYTES]}…[truncated: the line is {size} bytes]")
                    yield "\n"  # the csv reader never sees the line
                    continue
                consumed.append(line)
                yield line

        def too_long() -> str:
            size = max(overlong)
            overlong.clear()
            return f"line is {size} bytes, over the {MAX_LINE_BYTES}-byte limit"

        batch = LineBatch(line_numbers=[], texts=[], originals=[])
        reader = csv.reader(lines(), strict=False)
        header = next(reader, None)
        if header is None:
            return
        if overlong:
            batch.rejected.append((1, _printable("".join(consumed)), "header: " + too_long()))
        consumed.clear()
        header = [_printable(h.strip().lstrip("\ufeff")) for h in header]
        line_no = reader.line_num
        while True:
            try:
                row = next(reader)
                error = None
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a quoted field over the csv module's field size limit
                row, error = None, f"row: not valid CSV ({exc})"
            start = line_no + 1
            line_no = reader.line_num
            original = "".join(consumed).rstrip("\r\n")
            consumed.clear()
            if overlong:
                error = "row: " + too_long()
            elif error is None and (not row or (len(row) == 1 and not row[0].strip())):
                continue  # blank line
            if error is None:
                try:
                    original.encode("utf-8")
                except UnicodeEncodeError:
                    error = "invalid UTF-8: the row must be UTF-8 text"
            if error is None and original.count('"') % 2:
                error = ('row: unbalanced double quote: a quoted field is never closed (RFC 4180: enclose '
                         'a field in double quotes and double every quote inside it)')
            if error is not None:
                batch.rejected.append((start, _printable(original), error))
            else:
                record = {name: value for name, value in zip(header, row) if name}
                batch.line_numbers.append(start)  # type: ignore[union-attr]
                batch.texts.append(orjson.dumps(record).decode())
                batch.originals.append(original)  # type: ignore[union-attr]
            if len(batch.texts) + len(batch.rejected) >= CSV_BATCH_ROWS:
                yield batch
                batch = LineBatch(line_numbers=[], texts=[], originals=[])
        if batch.texts or batch.rejected:
            yield batch


def _parquet_value(value):
    """JSON for the values orjson has no type for: a binary column (BYTE_ARRAY without the UTF8
    annotation, as some writers store strings) is UTF-8 text; anything else (decimal, time…) its text."""
    if isinstance(value, bytes):
        return value.decode("utf-8")  # invalid UTF-8 raises: the row is quarantined
    return str(value)


def _parquet_row_error(row: dict, exc: Exception) -> str:
    for name, value in row.items():
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as bad:
                return f"{name}: invalid UTF-8 at byte {bad.start}: the row must be UTF-8 text"
    return f"row: cannot be read as a JSON object ({exc})"


def read_parquet_rows(path: Path) -> Iterator[LineBatch]:
    """Parquet rows as JSON objects; native timestamps become UTC 'YYYY-MM-DD HH:MM:SS' strings."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    row_no = 1
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        columns = {}
        for name, column in zip(record_batch.schema.names, record_batch.columns):
            if pa.types.is_timestamp(column.type):
                if column.type.tz is not None:
                    column = column.cast(pa.timestamp(column.type.unit, "UTC"))
                column = pc.strftime(column.cast(pa.timestamp("s", column.type.tz), safe=False), "%Y-%m-%d %H:%M:%S")
            elif pa.types.is_date(column.type):
                column = pc.strftime(column.cast(pa.timestamp("s")), "%Y-%m-%d %H:%M:%S")
            columns[name] = column
        rows = pa.table(columns).to_pylist()
        try:
            texts = [orjson.dumps(r, default=_parquet_value).decode() for r in rows]
            batch = LineBatch(range(row_no, row_no + len(texts)), texts)
        except orjson.JSONEncodeError:  # rare: find the rows that cannot be JSON and quarantine them
            batch = LineBatch()
            for n, row in enumerate(rows, row_no):
                try:
                    batch.texts.append(orjson.dumps(row, default=_parquet_value).decode())
                    batch.line_numbers.append(n)  # type: ignore[union-attr]
                except orjson.JSONEncodeError as exc:
                    batch.rejected.append((n, repr(row)[:MAX_LINE_BYTES], _parquet_row_error(row, exc)))
        yield batch
        row_no += len(rows)


def read_batches(path: Path) -> tuple[Dialect, Iterator[LineBatch | pa.Table]]:
    """The dialect and the row batches of a landing file, whatever its format: LineBatches, and for
    NDJSON Arrow tables of lines (line_no, raw, original) for the blocks of valid UTF-8."""
    fmt = file_format(path)
    if fmt is None:
        raise ValueError(f"{path.name}: not a landing file type (use .ndjson, .jsonl, .json, .csv, .parquet, or .gz of the text ones)")
    suffix, gz = fmt
    if suffix == ".parquet":
        return Dialect.JSON, read_parquet_rows(path)
    if suffix == ".csv":
        return Dialect.CSV, read_csv_rows(path, gz)
    return Dialect.JSON, read_json_lines(path, gz)
