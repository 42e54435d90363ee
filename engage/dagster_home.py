"""DAGSTER_HOME under ENGAGE_HOME, with an instance config that keeps refreshes one at a time and
starts queued runs promptly."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engage.files import write_atomically
from engage.logs import log_event
from engage.settings import Settings

logger = logging.getLogger("engage.dagster_home")

DAGSTER_YAML = """\
# engage dagster.yaml, version 2. Written by engage; replaced by newer versions unless edited.
telemetry:
  enabled: false
# Runs start in a worker that has its imports done already (orchestration/warm_launcher.py).
run_launcher:
  module: orchestration.warm_launcher
  class: WarmRunLauncher
run_queue:
  max_concurrent_runs: 4
  # The daemon looks at the queue every second (Dagster's default: 5 s), so a refresh the landing
  # sensor requested starts ~2 s sooner on average (docs/INGESTION.md, "Freshness").
  dequeue_interval_seconds: 1
  tag_concurrency_limits:
    # Refresh runs (sensor, schedule) write the warehouse: one at a time, the others queue.
    - key: "engage/refresh"
      limit: 1
"""

# Files written by earlier versions of engage, exactly: an existing home holding one of them was
# not edited, and gets the current file. An edited file is left alone.
EARLIER_DAGSTER_YAMLS = (
    """\
# Written by engage on first start; edit freely.
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 4
  tag_concurrency_limits:
    # Refresh runs (sensor, schedule) write the warehouse: one at a time, the others queue.
    - key: "engage/refresh"
      limit: 1
""",
)


def write_dagster_yaml(path: os.PathLike) -> str:
    """Write, upgrade or keep DAGSTER_HOME/dagster.yaml; returns what was done."""
    try:
        existing = open(path).read()
    except FileNotFoundError:
        existing = None
    if existing == DAGSTER_YAML:
        return "current"
    if existing is not None and existing not in EARLIER_DAGSTER_YAMLS:
        if "dequeue_interval_seconds" not in existing:
            log_event(logger, "dagster_yaml_kept", level=logging.WARNING, path=str(path),
                      reason="edited by hand",
                      hint="add 'dequeue_interval_seconds: 1' under run_queue: refreshes start ~2 s sooner")
        return "kept"
    # A Dagster process starting meanwhile reads the old or the new file; two engage commands
    # starting together each write under a temporary name of their own (both write the same text).
    write_atomically(Path(path), DAGSTER_YAML, durable=False)
    return "written" if existing is None else "upgraded"


def ensure_dagster_home(settings: Settings) -> str:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if write_dagster_yaml(home / "dagster.yaml") == "upgraded":
        log_event(logger, "dagster_yaml_upgraded", path=str(home / "dagster.yaml"))
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return str(home)
