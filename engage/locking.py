"""The refresh lock: one writer of the warehouse at a time, across processes.

A sensor run, the daily schedule and ``engage ingest`` all take it; a second refresh waits for the
first instead of corrupting it. Re-entrant within a process, so ``engage ingest`` can hold it for
its whole run while each step of the job takes it again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from engage.logs import log_event

logger = logging.getLogger("engage.lock")
_guard = threading.RLock()
_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth)


class LockTimeout(TimeoutError):
    pass


@contextmanager
def refresh_lock(path: Path, timeout_seconds: float = 3600.0, holder: str = ""):
    key = str(path)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    started = time.monotonic()
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if timeout_seconds <= 0:  # a try, not a wait
                os.close(fd)
                raise LockTimeout(f"{path} is held by another refresh") from None
            if not waited:
                log_event(logger, "refresh_lock_waiting", holder=holder, lock=key)
                waited = True
            if time.monotonic() - started > timeout_seconds:
                os.close(fd)
                raise LockTimeout(f"another refresh has held {path} for over {timeout_seconds:.0f} s")
            time.sleep(0.2)
    if waited:
        log_event(logger, "refresh_lock_acquired", holder=holder, waited_seconds=round(time.monotonic() - started, 2))
    with _guard:
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            _, depth = _held[key]
            if depth <= 1:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            else:
                _held[key] = (fd, depth - 1)
