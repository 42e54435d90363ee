"""The outcome of the latest refresh run, in ``state/last_refresh.json``, for ``/ready``.

A run records ``running`` when its load starts, ``ok`` when its snapshot is published and
``failed`` (with the step and the reason) when a step fails. A run killed with ``kill -9`` records
nothing more: it stays ``running`` with the id of a process that is gone, which ``problem`` sees.
The file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime, timezone

from engage.files import write_atomically
from engage.logs import log_event
from engage.settings import Settings

logger = logging.getLogger("engage.refresh_status")
STATUS_FILE = "last_refresh.json"


def _path(settings: Settings):
    return settings.state_dir / STATUS_FILE


def record(settings: Settings, run_id: str, status: str, *, step: str | None = None,
           reason: str | None = None, snapshot_id: str | None = None) -> None:
    """Record the run's status; best effort (on a full disk this write may fail too: logged)."""
    body = {
        "run_id": run_id,
        "status": status,
        "at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "step": step,
        "reason": reason,
        "snapshot_id": snapshot_id,
    }
    path = _path(settings)
    try:
        write_atomically(path, json.dumps(body))
    except OSError as exc:  # (write_atomically leaves no temporary file behind)
        log_event(logger, "refresh_status_not_recorded", logging.WARNING, status=status, error=str(exc))


def read(settings: Settings) -> dict | None:
    """The latest recorded status, or None when no refresh has recorded one yet."""
    try:
        body = json.loads(_path(settings).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"status": "unreadable", "reason": f"{type(exc).__name__}: {exc}"}
    return body if isinstance(body, dict) else {"status": "unreadable", "reason": "not a JSON object"}


def _alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[arg-type]
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # exists under another user, or unknown: not provably dead
    return True


def problem(settings: Settings) -> str | None:
    """What is wrong with the latest refresh, in words, or None if it succeeded or is running."""
    status = read(settings)
    if status is None or status.get("status") == "ok":
        return None
    run = f"the last refresh (run {status.get('run_id')}, {status.get('at')} UTC)"
    if status.get("status") == "failed":
        return f"{run} failed in step {status.get('step')}: {status.get('reason')}"
    if status.get("status") == "running":
        # Only a process on this host can be checked; elsewhere a running refresh is taken at its word.
        if status.get("host") == socket.gethostname() and not _alive(status.get("pid")):
            return f"{run} died without finishing (process {status.get('pid')} is gone, e.g. killed); the next refresh repairs it"
        return None
    return f"{STATUS_FILE} cannot be read ({status.get('reason')})"
