"""Writing a file so that readers see all of it or nothing: a temporary name, then a rename.

The temporary name starts with '.' and ends with '.tmp', which the landing folder ignores
(engage/landing.py), and carries the process id, so two processes never share one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by name (a folder: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """The temporary name under which this process writes `path` before renaming it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def temporary_paths(path: Path) -> list[Path]:
    """The temporary names of `path` that any process left (one that crashed before its rename)."""
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def write_atomically(path: Path, data: str | bytes | Iterable[bytes], durable: bool = True) -> None:
    """Write `data` (text, bytes, or chunks of bytes) under a temporary name and rename it to `path`.
    `durable`: fsync the file before the rename and the folder after, so a crash keeps the old or
    the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as fh:
            chunks = [data.encode()] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
            for chunk in chunks:
                fh.write(chunk)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
