"""The spare run worker of orchestration/warm_launcher.py: ``python -m orchestration.run_worker``.

It gets ready for a refresh run before one is asked for (imports, dbt parse, a first Dagster
instance), at the lowest CPU priority, then waits for a run id on stdin and runs it as
``dagster api execute_run`` would, at normal priority. A module of its own, apart from the
launcher: a module's top-level imports run in the main thread, and the launcher's import Dagster.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import threading
import time
from pathlib import Path

from engage.logs import log_event

logger = logging.getLogger("engage.run_worker")

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFINITIONS_MODULE = "orchestration.definitions"
# The pid of the run worker that took the previous run (set by the launcher): get ready after it.
AFTER_PID_ENV = "ENGAGE_SPARE_AFTER_PID"
# Set by a spare to the run it took: the launcher starts the next spare after it, which removes the
# snapshots beyond snapshots_keep (MartsKeeper), so that run's publish need not.
WARM_RUN_ENV = "ENGAGE_WARM_RUN_ID"


def _project_files() -> list[Path]:
    """The project's files this process has imported, and the dbt manifest the definitions read."""
    from orchestration.assets.dbt import dbt_project

    files = [Path(dbt_project.manifest_path)]
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(PROJECT_DIR) and ".venv" not in Path(path).parts:
            files.append(Path(path))
    return files


def _newest_mtime(files: list[Path]) -> float:
    newest = 0.0
    for f in files:
        try:
            newest = max(newest, f.stat().st_mtime)
        except FileNotFoundError:
            newest = float("inf")  # a file went away: the code changed
    return newest


def _why_not(instance, run_id: str, import_started: float, files: list[Path]) -> str | None:
    from dagster._core.code_pointer import ModuleCodePointer

    run = instance.get_run_by_id(run_id)
    if run is None or run.job_code_origin is None:
        return "run not found"
    origin = run.job_code_origin
    pointer = origin.repository_origin.code_pointer
    if not isinstance(pointer, ModuleCodePointer) or pointer.module != DEFINITIONS_MODULE:
        return f"another code location ({pointer.describe()})"
    if Path(origin.executable_path).resolve() != Path(sys.executable).resolve():
        return f"another Python ({origin.executable_path})"
    if _newest_mtime(files) > import_started:
        return "the code changed since the spare imported it"
    return None


def _get_ready() -> list[Path]:
    """What a refresh run needs before it can start, done before it is asked for: the imports
    (Dagster, the definitions with dagster-dbt, dbt's graph, DuckDB, pyarrow; dbt's runner and
    adapter), the dbt parse, and a first Dagster instance (its storage's first use imports and checks
    the schema: ~1 s, then ~0.06 s for the run's own). Returns the project's imported files."""
    import dagster  # noqa: F401
    import dbt.adapters.duckdb  # noqa: F401
    import dbt.cli.main  # noqa: F401
    import dagster._cli.api  # noqa: F401
    from dagster import DagsterInstance

    import orchestration.definitions  # noqa: F401
    from orchestration.assets.dbt import parse_ahead
    from orchestration.resources import build_engage_resource

    files = _project_files()
    try:  # the run's `dbt build` then skips its parse
        seconds = parse_ahead(build_engage_resource().settings())
        log_event(logger, "dbt_parsed_ahead", seconds=round(seconds, 2))
    except Exception as exc:  # the build parses, as without a warm worker
        log_event(logger, "dbt_parse_ahead_failed", level=logging.WARNING, error=f"{type(exc).__name__}: {exc}")
    if os.environ.get("DAGSTER_HOME"):  # the daemon's instance, which the run's reference names
        try:
            DagsterInstance.get().dispose()
        except Exception as exc:  # the run makes its instance anyway
            log_event(logger, "instance_ahead_failed", level=logging.WARNING, error=f"{type(exc).__name__}: {exc}")
    return files


def _get_ready_at_low_priority() -> list[Path]:
    """_get_ready in a thread of the lowest CPU priority (nice 19; on Linux a thread's own): a run
    may still start beside it (a run worker not started by this launcher, `engage ingest`), and its
    ~5 s of CPU would otherwise slow that run down on a 2-core machine (10 M events, +1% refresh: its
    dbt nodes 7.6 -> 10.2 s of CPU beside a spare at normal priority).
    The run itself goes on in the main thread, at the priority the worker was started with: the
    threads dbt and DuckDB start then are the main thread's children, not this one's."""
    result: list = []

    def work() -> None:
        _lowest_priority()
        try:
            result.append(_get_ready())
        except BaseException as exc:  # re-raised in the main thread
            result.append(exc)

    thread = threading.Thread(target=work, name="spare-get-ready", daemon=True)  # Ctrl-C: no wait
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class MartsKeeper:
    """While the spare waits for its run: once a publish has made the marts file a snapshot, copy it
    back for the next build (engage.snapshots.restore_marts), and remove the snapshots beyond
    `snapshots_keep` that a run in a warm worker left (orchestration/assets/publish.py), at the
    lowest CPU priority, so that the run does not pay for the copy (0.2-0.5 s at 10 M events) nor
    for the removal (~0.1 s), and the data engineers' dbt finds its marts. Looks twice a second;
    takes the refresh lock only if it is free (a run that holds it restores the marts itself, when
    its build starts)."""

    INTERVAL_SECONDS = 0.5

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spare-marts-keeper", daemon=True)

    def start(self) -> MartsKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Before the run: a restore under way finishes first. The refresh lock is re-entrant within
        a process, so the run must not start while this thread might hold it."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from engage.locking import LockTimeout, refresh_lock
        from engage.snapshots import current_snapshot, prune, restore_marts_quietly, snapshots_to_prune
        from orchestration.resources import build_engage_resource

        _lowest_priority()
        settings = build_engage_resource().settings()
        while not self._stop.wait(self.INTERVAL_SECONDS):
            restore = not settings.marts_path.exists() and current_snapshot(settings) is not None
            if not restore and not snapshots_to_prune(settings):
                continue
            try:
                with refresh_lock(settings.refresh_lock_path, timeout_seconds=0, holder="spare run worker"):
                    restored = restore_marts_quietly(settings) if restore else None
                    removed = prune(settings)
                if restored:
                    log_event(logger, "marts_restored_ahead", **restored)
                if removed:
                    log_event(logger, "snapshots_pruned_ahead", removed=removed, kept=settings.snapshots_keep)
            except LockTimeout:
                continue


def _lowest_priority() -> None:
    """This thread at nice 19 (on Linux a thread's own priority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass  # not Linux: the spare competes with the run at the same priority


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return not Path("/proc/self").exists()  # gone meanwhile; without /proc, kill's answer stands


def wait_for_previous_run(pid: int, stdin, poll_seconds: float = 0.1) -> str | None:
    """Wait until the run worker `pid` (which took the previous run) has exited, before getting
    ready: a spare's imports and parse beside a run slow its dbt step down by ~15% even at nice 19
    (10 M events, +1% refresh, deployed: 3.5-3.6 s -> 3.0-3.1 s without; the cores' caches, not their
    time: a niced busy loop beside it costs nothing). The run queue starts the next refresh only
    after this one, so the spare still gets ready before it in all but back-to-back refreshes.
    Returns None when that run ended, or what came on stdin meanwhile: "" (the launcher went away),
    or a run request."""
    while process_alive(pid):
        readable, _, _ = select.select([stdin], [], [], poll_seconds)
        if readable:
            return stdin.readline()
    return None


def _log_to_stderr() -> None:
    """The spare's own events (waited, parsed ahead, marts restored) on stderr, which goes where the
    launcher's goes (`dagster dev`'s output); a run's events go to Dagster's logs as in any run."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def worker_main() -> int:
    _log_to_stderr()
    pending = None
    if os.environ.get(AFTER_PID_ENV):
        started = time.monotonic()
        pending = wait_for_previous_run(int(os.environ[AFTER_PID_ENV]), sys.stdin)
        log_event(logger, "spare_waited_for_run", pid=os.environ[AFTER_PID_ENV],
                  seconds=round(time.monotonic() - started, 1))
        if pending == "":
            return 0  # the launcher went away
    import_started = time.time()  # a project file changed after this: the spare may hold old code
    files = _get_ready_at_low_priority()
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    from orchestration.pooled_storage import with_pooled_sqlite_storage

    reply = sys.stdout
    keeper = MartsKeeper().start()
    print("ready", file=reply, flush=True)
    line = pending if pending is not None else sys.stdin.readline()
    keeper.stop()
    if not line:
        return 0  # the launcher went away
    request = json.loads(line)
    with capture_interrupts():
        instance_ref = with_pooled_sqlite_storage(deserialize_value(request["instance_ref"]))
        with DagsterInstance.from_ref(instance_ref) as instance:
            reason = _why_not(instance, request["run_id"], import_started, files)
            print("accepted" if reason is None else f"declined {reason}", file=reply, flush=True)
            if reason is not None:
                return 0
            # From here on this is a run worker: its output goes where the launcher's stderr goes.
            os.environ[WARM_RUN_ENV] = request["run_id"]
            sys.stdout.flush()
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
            return _execute_run_command_body(request["run_id"], instance, lambda event: None,
                                             set_exit_code_on_failure=False)


if __name__ == "__main__":
    try:
        sys.exit(worker_main())
    except KeyboardInterrupt:  # Ctrl-C of `make run` while this spare waited: nothing to report
        sys.exit(130)
