"""The bucket cubes (``session_cube``, ``engagement_cube``, ``activity_cube``, ``geo_cube``) and the
ranking pipes' day sums (``event_day_sums``, ``geo_day_sums``) held in memory, once per snapshot.

A request that the cubes answer reads one contiguous run of cube rows: one selector (grain,
filter, platform; grain, group_by) and a range of bucket starts (a ranking: the rows of one
bucket). A DuckDB statement costs ~1.3 ms here whatever it reads (most of it fixed per statement),
so for these lookups the API keeps the cube's numbers in numpy arrays, sorted by (selector,
period_start), and answers with a binary search (~0.1 ms). A published snapshot never changes, so
the copy is exact; it is loaded on the first request that needs it (two statements per cube,
~0.2-0.8 s at 10 M events) and dropped with the snapshot. Memory: 8 bytes per number, no Python
object per row (the activity cube at 10 M events, ~1 M rows: ~16 MB), except the place names of
``geo_cube`` (~50,000 rows).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np

from serving.snapshots import snapshot_fact

log = logging.getLogger("engage.serving.cubes")


@dataclass(frozen=True)
class CubeSpec:
    table: str
    selector: tuple[str, ...]  # the columns a request fixes (one value each; NULL is a value)
    measures: tuple[str, ...]  # integers
    labels: tuple[str, ...] = ()  # text columns of the rows (None for NULL)


_SUMS = ("event_count", "unique_users", "duration_sum")
ENGAGEMENT = CubeSpec("engagement_cube", ("grain", "filter_dim", "filter_value"), _SUMS)
SESSIONS = CubeSpec("session_cube", ("grain", "filter_dim", "filter_value"),
                    ("session_count", "bounced_sessions", "duration_sum"))
ACTIVITY = CubeSpec("activity_cube", ("grain", "filter_dim", "filter_value", "platform"), ("active_users",))
GEO = CubeSpec("geo_cube", ("grain", "group_by"), _SUMS, labels=("country", "region", "city"))


# The ranking pipes' day sums (no users): summed over a window's days per key (``DaySums``).
EVENT_DAY_SUMS = CubeSpec("event_day_sums", ("filter_dim", "filter_value"), ("event_count", "duration_sum"),
                          labels=("event_type",))
GEO_DAY_SUMS = CubeSpec("geo_day_sums", ("filter_dim", "filter_value"), ("event_count", "duration_sum"),
                        labels=("country", "region", "city"))


class _BySelector:
    """Rows sorted by (selector, period_start): each selector value's run of rows, and the rows of a
    range of bucket starts in it by binary search."""

    def __init__(self, slices: dict[tuple, tuple[int, int]], period_start: np.ndarray):
        self._slices = slices
        self._period_start = period_start

    @staticmethod
    def _slices_of(cur: duckdb.DuckDBPyConnection, spec: CubeSpec) -> dict[tuple, tuple[int, int]]:
        """{selector: (first row, past its last)} of ``spec``'s rows read ORDER BY selector, period_start."""
        order = ", ".join(spec.selector)
        groups = cur.execute(f"SELECT {order}, count(*) FROM {spec.table} GROUP BY ALL ORDER BY {order}").fetchall()
        slices, start = {}, 0
        for *key, n in groups:  # a snapshot never changes: every statement sees the same rows
            slices[tuple(key)] = (start, start + n)
            start += n
        return slices

    @property
    def size(self) -> int:
        return len(self._period_start)

    def selectors(self) -> list[tuple]:
        return list(self._slices)

    def first_and_last(self, key: tuple) -> tuple[datetime, datetime] | None:
        """(first, last) bucket start of selector ``key``'s rows; None when it has none."""
        bounds = self._slices.get(key)
        if bounds is None or bounds[0] == bounds[1]:
            return None
        return self._period_start[bounds[0]].item(), self._period_start[bounds[1] - 1].item()

    def _range(self, key: tuple, lo: datetime, hi: datetime) -> tuple[int, int]:
        """[i, j): the rows of selector ``key`` with lo <= period_start <= hi."""
        bounds = self._slices.get(key)
        if bounds is None:
            return 0, 0
        s, e = bounds
        ps = self._period_start[s:e]
        return (s + int(np.searchsorted(ps, np.datetime64(lo, "us"), "left")),
                s + int(np.searchsorted(ps, np.datetime64(hi, "us"), "right")))


class CubeIndex(_BySelector):
    """One cube's rows: for each selector value, its bucket starts (ascending), labels and measures."""

    def __init__(self, slices: dict[tuple, tuple[int, int]], period_start: np.ndarray, columns: list[np.ndarray]):
        super().__init__(slices, period_start)
        self._columns = columns  # the labels, then the measures

    @classmethod
    def load(cls, cur: duckdb.DuckDBPyConnection, spec: CubeSpec) -> "CubeIndex":
        data = cur.execute(f"SELECT period_start, {', '.join(spec.labels + spec.measures)} FROM {spec.table} "
                           f"ORDER BY {', '.join(spec.selector)}, period_start").fetchnumpy()
        columns = [object_column(data[c]) for c in spec.labels] + [np.asarray(data[c]) for c in spec.measures]
        return cls(cls._slices_of(cur, spec), np.asarray(data["period_start"]), columns)

    def rows(self, key: tuple, lo: datetime, hi: datetime) -> list[tuple]:
        """(period_start, *labels, *measures) of the rows of selector ``key`` with lo <= period_start <= hi."""
        i, j = self._range(key, lo, hi)
        if i >= j:
            return []
        return list(zip(self._period_start[i:j].tolist(), *(c[i:j].tolist() for c in self._columns)))


class DaySums(_BySelector):
    """A day-sums mart (``EVENT_DAY_SUMS``, ``GEO_DAY_SUMS``) in memory: per selector (filter), its
    rows by day, each key (the labels' first 1, 2… columns) as an integer code, so that a window's
    sums per key are one ``np.add.at`` over its rows (exact int64) instead of a DuckDB statement
    (~2.5-3.7 ms at 10 M events). No Python object per row: the codes' names are kept once."""

    def __init__(self, slices: dict[tuple, tuple[int, int]], period_start: np.ndarray, codes: list[np.ndarray],
                 names: list[list[tuple]], measures: list[np.ndarray]):
        super().__init__(slices, period_start)
        self._codes, self._names, self._measures = codes, names, measures  # codes/names per key depth

    @classmethod
    def load(cls, cur: duckdb.DuckDBPyConnection, spec: CubeSpec) -> "DaySums":
        depths = [", ".join(spec.labels[:d]) for d in range(1, len(spec.labels) + 1)]
        ranks = ", ".join(f"dense_rank() OVER (ORDER BY {cols}) - 1 AS code{d}" for d, cols in enumerate(depths))
        data = cur.execute(f"SELECT period_start, {ranks}, {', '.join(spec.measures)} FROM {spec.table} "
                           f"ORDER BY {', '.join(spec.selector)}, period_start").fetchnumpy()
        # code -> key, in the ranks' order
        names = [cur.execute(f"SELECT DISTINCT {cols} FROM {spec.table} ORDER BY {cols}").fetchall() for cols in depths]
        return cls(cls._slices_of(cur, spec), np.asarray(data["period_start"]),
                   [np.asarray(data[f"code{d}"], dtype=np.int64) for d in range(len(depths))], names,
                   [np.asarray(data[m], dtype=np.int64) for m in spec.measures])

    def totals(self, key: tuple, lo: datetime, hi: datetime, depth: int) -> tuple[list[tuple], int]:
        """([(*the first ``depth`` labels, *each measure summed)] over the rows of selector ``key``
        with lo <= period_start <= hi, one per key with rows; the number of rows summed)."""
        i, j = self._range(key, lo, hi)
        if i >= j:
            return [], 0
        codes, inverse = np.unique(self._codes[depth - 1][i:j], return_inverse=True)
        sums = []
        for m in self._measures:
            total = np.zeros(len(codes), dtype=np.int64)
            np.add.at(total, inverse, m[i:j])
            sums.append(total.tolist())
        names = self._names[depth - 1]
        return [(*names[c], *(s[k] for s in sums)) for k, c in enumerate(codes.tolist())], j - i


def object_column(column: np.ndarray) -> np.ndarray:
    """A text column as an object array, NULL as None (fetchnumpy masks NULLs)."""
    if isinstance(column, np.ma.MaskedArray):
        out = column.data.astype(object)
        out[np.ma.getmaskarray(column)] = None
        return out
    return np.asarray(column, dtype=object)


def cube_index(cur: duckdb.DuckDBPyConnection, spec: CubeSpec) -> CubeIndex | None:
    """The in-memory copy of ``spec``'s cube in the snapshot ``cur`` reads (loaded once per snapshot,
    serving/snapshots.py ``snapshot_fact``). None for a snapshot without the cube."""
    return snapshot_fact(("cube", spec.table), lambda: _load(cur, spec, CubeIndex))


def day_sums(cur: duckdb.DuckDBPyConnection, spec: CubeSpec) -> DaySums | None:
    """The in-memory copy of a day-sums mart (as ``cube_index``)."""
    return snapshot_fact(("day_sums", spec.table), lambda: _load(cur, spec, DaySums))


def _load(cur: duckdb.DuckDBPyConnection, spec: CubeSpec, kind: type) -> CubeIndex | DaySums | None:
    started = time.perf_counter()
    try:
        index = kind.load(cur, spec)
    except duckdb.CatalogException:  # a snapshot published before the mart existed
        return None
    # once per snapshot: worth a line (a request waited for it)
    log.info("event=cube_loaded table=%s rows=%d selectors=%d seconds=%.3f", spec.table, index.size,
             len(index.selectors()), time.perf_counter() - started)
    return index


__all__ = ["ACTIVITY", "ENGAGEMENT", "EVENT_DAY_SUMS", "GEO", "GEO_DAY_SUMS", "SESSIONS", "CubeIndex", "CubeSpec",
           "DaySums", "cube_index", "day_sums", "object_column"]
