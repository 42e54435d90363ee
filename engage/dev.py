"""`make run`: set up ENGAGE_HOME, load demo data, start Dagster (3000) and the API (8000).

Ctrl-C stops everything this started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engage.dagster_home import ensure_dagster_home
from engage.settings import Settings

DEMO_EVENTS = int(os.environ.get("ENGAGE_DEMO_EVENTS", "200000"))
PROJECT_DIR = Path(__file__).resolve().parent.parent


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    print(f"  starting: {' '.join(cmd)}  (log: {log})")
    return subprocess.Popen(cmd, cwd=PROJECT_DIR, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the whole group
    deadline = time.time() + 15
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C, and also a plain `kill` or a closed terminal, stop everything this started (a shell
    # starts background jobs with SIGINT ignored: restore it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    settings = Settings()
    settings.ensure_dirs()
    ensure_dagster_home(settings)
    bin_dir = Path(sys.executable).parent
    token = settings.resolved_admin_token()
    os.environ["ENGAGE_ADMIN_TOKEN"] = token
    logs = settings.home_dir / "logs"
    logs.mkdir(exist_ok=True)

    if not any(settings.landing.rglob("*.ndjson")):
        print(f"engage: generating {DEMO_EVENTS} demo events over the last 30 days into {settings.landing}")
        subprocess.run([bin_dir / "engage", "generate", "--events", str(DEMO_EVENTS), "--days", "30",
                        "--late-files", "2", "--bad-rows", "0.001", "--out", str(settings.landing)], check=True)
    print("engage: loading and publishing (engage ingest)…")
    subprocess.run([bin_dir / "engage", "ingest"], check=True, stdout=sys.stdout,
                   stderr=(logs / "ingest.log").open("ab"))

    procs = [
        _start([str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3000"],
               logs / "dagster.log"),
        _start([str(bin_dir / "engage"), "serve", "--host", "127.0.0.1", "--port", "8000"], logs / "api.log"),
    ]
    print(
        "\nengage is running:\n"
        "  Dagster UI   http://127.0.0.1:3000  (assets, checks, landing_sensor, daily_rebuild)\n"
        "  API          http://127.0.0.1:8000/docs\n"
        f"  admin token  {token}\n"
        f"  landing      {settings.landing}  (drop .ndjson/.csv/.parquet files here)\n"
        f"  try: curl 'http://127.0.0.1:8000/v0/pipes/session_metrics.json?token={token}'\n"
        "Ctrl-C stops everything.\n"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("engage: a process exited; see the logs in", logs)
        return 1
    except KeyboardInterrupt:
        print("\nengage: stopping…")
        return 0
    finally:
        _stop(procs)


if __name__ == "__main__":
    sys.exit(main())
