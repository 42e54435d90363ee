"""DAGSTER_HOME under ENGAGE_HOME, with an instance config that keeps refreshes one at a time."""

from __future__ import annotations

import os

from engage.settings import Settings

DAGSTER_YAML = """\
# Written by engage on first start; edit freely.
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 4
  tag_concurrency_limits:
    # Refresh runs (sensor, schedule) write the warehouse: one at a time, the others queue.
    - key: "engage/refresh"
      limit: 1
"""


def ensure_dagster_home(settings: Settings) -> str:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return str(home)
