"""Per-snapshot result cache of the pipes (docs/ARCHITECTURE.md, "Result cache").

A published snapshot never changes, so the answer to a query on a given snapshot never changes
either: caching it is exact, not an approximation. The key is (snapshot id, pipe, the validated
query, reduced to what the answer depends on: the whole hours of the window, time bucket, the
pipe's filters, limit, group_by, segment_by_platform); a new snapshot means new keys, and old
entries age out of the LRU. A request with ``Cache-Control: no-cache`` (or ``no-store``) computes its
answer anyway (used by the benchmark, bench/pipes.py).

``ENGAGE_RESULT_CACHE_ENTRIES`` (default 2048; 0 turns it off) bounds the entries, and every entry
counts at least its rows: at most ``ENGAGE_RESULT_CACHE_ROWS`` (default 1,000,000) rows in all.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from typing import Any, Hashable

from serving.formats import Result
from serving.params import PipeQuery


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


def cache_key(snapshot_id: str, pipe: Any, q: PipeQuery) -> Hashable:
    filters = tuple((k, tuple(v)) for k, v in pipe.filters_of(q).items())
    return (snapshot_id, pipe.name, q.h_start, q.h_end, q.time_bucket if pipe.time_series else None, filters,
            q.limit, q.group_by, q.segment_by_platform)


class ResultCache:
    def __init__(self, max_entries: int | None = None, max_rows: int | None = None):
        self.max_entries = _env_int("ENGAGE_RESULT_CACHE_ENTRIES", 2048) if max_entries is None else max_entries
        self.max_rows = _env_int("ENGAGE_RESULT_CACHE_ROWS", 1_000_000) if max_rows is None else max_rows
        self._data: OrderedDict[Hashable, Result] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def _weight(r: Result) -> int:
        return max(1, len(r.rows))

    def get(self, key: Hashable) -> Result | None:
        if not self.max_entries:
            return None
        with self._lock:
            r = self._data.get(key)
            if r is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
        return dataclasses.replace(r, statistics={})  # the caller sets this request's statistics

    def put(self, key: Hashable, result: Result) -> None:
        w = self._weight(result)
        if not self.max_entries or w > self.max_rows:
            return
        stored = dataclasses.replace(result, statistics={})
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._rows -= self._weight(old)
            self._data[key] = stored
            self._rows += w
            while len(self._data) > self.max_entries or self._rows > self.max_rows:
                _, evicted = self._data.popitem(last=False)
                self._rows -= self._weight(evicted)

    def __len__(self) -> int:
        return len(self._data)


def bypass(cache_control: str | None) -> bool:
    """True when the request asks not to be answered from a cache."""
    if not cache_control:
        return False
    directives = {d.strip().split("=", 1)[0].lower() for d in cache_control.split(",")}
    return bool(directives & {"no-cache", "no-store"})


__all__ = ["ResultCache", "cache_key", "bypass"]
