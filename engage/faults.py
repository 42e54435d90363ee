"""Faults: named fault points for tests, and recognising a full disk when one happens.

``ENGAGE_FAULT=<point>`` makes the process die at that point at once. ``os._exit`` skips every
cleanup, like ``kill -9``: what is on disk is what a real crash leaves. ``ENGAGE_FAULT=<damage>``
cuts a file just written to a third, as a storage fault that lost the write would.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FAULT_ENV = "ENGAGE_FAULT"
POINTS = ("load_before_commit", "dbt_before_build", "publish_before_swap")
DAMAGES = ("publish_damaged_write",)

# How a write that found no room reports itself: the OS (ENOSPC; EFBIG past a file size limit;
# EDQUOT past a quota), DuckDB ("Could not write file ...: No space left on device"), SQLite
# (Dagster's storage: "database or disk is full").
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DISK_MESSAGES = ("no space left on device", "file too large", "disk quota exceeded", "database or disk is full")


def point(name: str) -> None:
    assert name in POINTS, name
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)


def damage(name: str, path: Path) -> None:
    assert name in DAMAGES, name
    if os.environ.get(FAULT_ENV) == name:
        os.truncate(path, path.stat().st_size // 3)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a write that found no room."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return True
        if any(m in str(exc).lower() for m in _DISK_MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DiskFull(OSError):
    """A write failed for lack of disk space (or past a file size limit or quota)."""

    def __init__(self, doing: str, where: str, exc: BaseException):
        super().__init__(
            errno.ENOSPC,
            f"out of disk space while {doing} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}): "
            f"free space under {where} (or raise its file size limit or quota) and run again",
        )
