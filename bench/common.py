"""Shared helpers of the benchmarks: processes, ports, machine facts, percentiles, docs/INGESTION.md.

Every process a benchmark starts goes through ``Processes``: each one gets its own session (process
group), and ``Processes.stop()`` ends every group, then any descendant that left its group (a Dagster
run worker, a dbt subprocess), by pid. ``stop()`` runs from ``finally`` and ``atexit``; SIGTERM is
turned into ``SystemExit`` (``install_signal_handlers``), so Ctrl-C, ``kill`` and errors all clean up.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestration.run_worker import process_alive

PROJECT_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
DOC_PATH = PROJECT_DIR / "docs" / "INGESTION.md"

QUIET_ENV = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "1",
}


# -- processes ---------------------------------------------------------------------------------


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP raise SystemExit and SIGINT KeyboardInterrupt (even when the shell started us in
    the background with SIGINT ignored), so that ``finally`` blocks stop what was started."""

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _descendants(pid: int) -> list[int]:
    """Every descendant pid of ``pid`` (from /proc; psutil when installed)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:
        pass
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Processes:
    """The processes a benchmark started; ``stop()`` ends all of them and their descendants."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self._known: set[int] = set()  # descendants seen while running (by pid)
        atexit.register(self.stop)

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path = PROJECT_DIR) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def remember_descendants(self) -> None:
        """Note the current descendants (called now and then, and by stop())."""
        for _, p in self.procs:
            if p.poll() is None:
                self._known.update(_descendants(p.pid))

    def check_alive(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode}")

    def stop(self, timeout: float = 20.0) -> None:
        if not self.procs and not self._known:
            return
        self.remember_descendants()
        for _, p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # whatever is left in the group
            except (ProcessLookupError, PermissionError):
                pass
            if p.poll() is None:
                p.kill()
                p.wait(5)
        # Descendants that moved to a session of their own (e.g. Dagster run workers).
        leftovers = [pid for pid in self._known if process_alive(pid)]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 5
        while any(process_alive(pid) for pid in leftovers) and time.monotonic() < end:
            time.sleep(0.1)
        for pid in leftovers:
            if process_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.procs.clear()
        self._known.clear()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, procs: Processes | None = None, ok=(200,)) -> None:
    """Wait until GET ``url`` answers one of ``ok`` (or raise after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if procs is not None:
            procs.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (last: {last})")


def engage_env(home: Path, token: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env.update({"ENGAGE_HOME": str(home), "ENGAGE_ADMIN_TOKEN": token, "DAGSTER_HOME": str(home / "dagster"),
                "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"})
    env.pop("ENGAGE_LANDING_DIR", None)
    env.pop("ENGAGE_TOKENS_FILE", None)
    env.update(extra)
    return env


def temp_home(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- data ---------------------------------------------------------------------------------------


def generated_lines(events: int, days: int = 1, seed: int = 0, bad_rows: float = 0.0) -> list[bytes]:
    """``events`` realistic NDJSON lines (plus bad ones) from engage.generate, in file order."""
    from engage.generate import generate

    with tempfile.TemporaryDirectory(prefix="engage-bench-gen-") as d:
        summary = generate(events=events, days=days, seed=seed, out=Path(d), bad_rows=bad_rows)
        lines: list[bytes] = []
        for p in summary["paths"]:
            lines += Path(p).read_bytes().splitlines(keepends=True)
    return lines


# -- statistics -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return percentile(values, 50)


# -- machine -----------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class QuietWaiter:
    """``wait_for_quiet`` with one time budget for a whole benchmark (so the default runs stay short)."""

    def __init__(self, budget: float, threshold: float = 0.3, exclude=None) -> None:
        self.budget, self.threshold, self.waited = budget, threshold, 0.0
        self.exclude = exclude  # callable: CPU seconds of our own processes (not "other" load)

    def wait(self, sample: float = 1.0) -> float:
        if self.waited >= self.budget:
            return float("nan")  # budget spent: measure as the machine is
        t0 = time.monotonic()
        busy = wait_for_quiet(max(0.0, self.budget - self.waited), self.threshold, sample, self.exclude)
        self.waited += time.monotonic() - t0
        return busy


def wait_for_quiet(max_wait: float, threshold: float = 0.3, sample: float = 2.0, exclude=None) -> float:
    """Wait (at most ``max_wait`` s) until the machine is busy less than ``threshold`` cores.

    Other sessions may run tests on the same 2 cores; a benchmark started then measures them too.
    Returns the busy cores of the last sample.
    """
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        b0, o0 = machine_busy_seconds(), (exclude() if exclude else 0.0)
        time.sleep(sample)
        busy = max(0.0, (machine_busy_seconds() - b0) - ((exclude() - o0) if exclude else 0.0)) / sample
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        if not said:
            print(f"  other processes busy ({busy:.2f} cores); waiting (up to {max_wait:.0f} s) for a quieter moment…")
            said = True



def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if m:
            mem = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "engage", "serving",
                                "orchestration", "dbt_project", "pyproject.toml"], cwd=PROJECT_DIR,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
        if dirty:
            commit += f" + uncommitted changes to {', '.join(dirty[:6])}" + (" …" if len(dirty) > 6 else "")
    except Exception:
        commit = "?"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit,
    }


def machine_line(info: dict[str, str]) -> str:
    return (f"Measured {info['date']} on `nproc`={info['nproc']} ({info['cpu']}), {info['memory']} RAM, "
            f"Python {info['python']}, {info['os']}, code at `{info['commit']}`.")


# -- docs/INGESTION.md -----------------------------------------------------------------------------

DOC_SKELETON = """# Ingestion performance

Two benchmarks measure the ingestion paths of engage on the project's reference machine (2 cores):

- **Events API throughput**: how many events per second `POST /v0/events` accepts
  (validated, written as an immutable landing file, quarantined rows aside), over loopback.
- **Freshness**: how long an event posted to `/v0/events` takes to be visible in a pipe, with the
  system running as `make run` runs it (landing sensor → `refresh_job` → dbt → published snapshot).

Each script starts what it needs on free `127.0.0.1` ports with a temporary `ENGAGE_HOME`, stops
everything it started (also on Ctrl-C or error), and rewrites only its own section below, between
its markers.

## How to run

```sh
.venv/bin/pip install -e '.[bench]'            # psutil, py-spy (the profile of a missed goal)
.venv/bin/python -m bench.events_throughput    # Events API throughput, < 2 min (--help)
.venv/bin/python -m bench.freshness            # post → visible in a pipe, ~12 min, more on a busy machine (--help)
```

## Events API throughput

<!-- BEGIN bench:events_throughput -->
(not measured yet: run `.venv/bin/python -m bench.events_throughput`)
<!-- END bench:events_throughput -->

## Freshness

<!-- BEGIN bench:freshness -->
(not measured yet: run `.venv/bin/python -m bench.freshness`)
<!-- END bench:freshness -->
"""


def write_doc_section(name: str, body: str, path: Path = DOC_PATH) -> None:
    """Replace the text between ``<!-- BEGIN bench:name -->`` and ``<!-- END bench:name -->``."""
    begin, end = f"<!-- BEGIN bench:{name} -->", f"<!-- END bench:{name} -->"
    text = path.read_text() if path.exists() else DOC_SKELETON
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n## {name}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{begin}\n{body.strip()}\n{end}{tail}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def md_table(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def dump_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))
