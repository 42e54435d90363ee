"""A run launcher that keeps one run worker warm (configured in DAGSTER_HOME/dagster.yaml).

Dagster's DefaultRunLauncher asks the code server to start a new process for every run, and that
process imports Dagster, dagster-dbt, dbt, DuckDB and the definitions before the run's first step,
then dbt parses the project: ~5 s of CPU, the largest part of a small refresh's latency
(docs/INGESTION.md, "Freshness"). This launcher keeps one spare worker
(``python -m orchestration.run_worker``) that has done the imports and the dbt parse already
(orchestration/assets/dbt.py: parse_ahead) and waits for a run id. A run goes to the spare, which
runs it as ``dagster api execute_run`` would and exits when it ends. The next spare starts at the
hand-over and gets ready once that run's worker has exited (its imports beside the run slowed the
run's dbt step down by ~15%, even at the lowest CPU priority, which it still takes), then copies the
new snapshot back as the marts file of the next build (run_worker.py, MartsKeeper).

Whatever the spare cannot vouch for goes to DefaultRunLauncher, unchanged: no spare yet (the first
run after start-up), a spare that died or did not answer, a run of another code location, or code
that changed since the spare imported it (any imported file of the project, or the dbt manifest,
newer than the import).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dagster import DefaultRunLauncher

from engage.logs import log_event
from orchestration.run_worker import AFTER_PID_ENV

logger = logging.getLogger("engage.warm_launcher")

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORKER_MODULE = "orchestration.run_worker"
WORKER_PID_TAG = "engage/run_worker_pid"
# A spare may still be importing when a run arrives (a few seconds, more on a busy machine): waiting
# for it beats starting a cold process beside it. Past this, the run goes to DefaultRunLauncher.
ACCEPT_TIMEOUT_SECONDS = 90.0


class SpareWorker:
    """A `python -m orchestration.run_worker` process and the lines it answers on stdout."""

    def __init__(self, after_pid: int | None = None):
        env = {**os.environ, AFTER_PID_ENV: str(after_pid)} if after_pid else None
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], cwd=PROJECT_DIR, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"spare-{self.proc.pid}").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # EOF: the worker exited, or runs a run (its output then goes to stderr)
        self.proc.stdout.close()
        self.proc.wait()  # no zombie once it ends

    def hand_over(self, run_id: str, instance_ref: str) -> str:
        """'accepted', or why not."""
        if self.proc.poll() is not None:
            return f"the spare worker exited (code {self.proc.returncode})"
        try:
            self.proc.stdin.write(json.dumps({"run_id": run_id, "instance_ref": instance_ref}) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            return f"the spare worker is gone ({exc})"
        deadline = time.monotonic() + ACCEPT_TIMEOUT_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "accepted" or line.startswith("declined"):
                self.proc.stdin.close()  # it reads nothing more
                return line
            if line == "":
                return f"the spare worker exited (code {self.proc.wait()})"
        self.proc.kill()  # before anything else may start this run
        self.proc.wait()
        return f"the spare worker did not answer within {ACCEPT_TIMEOUT_SECONDS:g} s"

    def stop(self) -> None:
        """A spare waiting for a run exits at the end of its stdin."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WarmRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher, but a run starts in a spare worker that has its imports done."""

    def __init__(self, inst_data=None):
        super().__init__(inst_data=inst_data)
        self._lock = threading.Lock()
        self._spare: SpareWorker | None = None

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    def launch_run(self, context) -> None:
        from dagster._serdes import serialize_value

        run = context.dagster_run
        started = time.perf_counter()
        with self._lock:
            spare, self._spare = self._spare, None
            if spare is None:
                outcome = "no spare worker yet"
            else:
                outcome = spare.hand_over(run.run_id, serialize_value(self._instance.get_ref()))
            # The next spare gets ready once this run's worker has exited (run_worker.py).
            self._spare = SpareWorker(after_pid=spare.pid if outcome == "accepted" else None)
        if outcome == "accepted":
            self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(spare.pid)})
            self._run_ids.add(run.run_id)
            waited = round(time.perf_counter() - started, 3)
            log_event(logger, "run_launched_warm", run_id=run.run_id, pid=spare.pid, seconds=waited)
            self._instance.report_engine_event(f"Launched in a warm run worker (pid {spare.pid}, "
                                               f"ready after {waited:.1f} s).", run, cls=self.__class__)
            return
        from dagster import DagsterRunStatus

        if self._instance.get_run_by_id(run.run_id).status != DagsterRunStatus.STARTING:
            raise RuntimeError(f"run {run.run_id} was started by a spare worker that then failed: {outcome}")
        log_event(logger, "run_launched_cold", run_id=run.run_id, reason=outcome)
        self._instance.report_engine_event(f"Launched in a new process: {outcome}.", run, cls=self.__class__)
        super().launch_run(context)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        pid = run.tags.get(WORKER_PID_TAG) if run else None
        if pid is None:
            return super().terminate(run_id)
        if run.is_finished or not _is_our_worker(int(pid)):
            return False
        self._instance.report_run_canceling(run)
        os.kill(int(pid), signal.SIGINT)  # what Dagster's own run worker gets on termination
        return True

    def dispose(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.stop()
        super().dispose()


def _is_our_worker(pid: int) -> bool:
    try:
        return WORKER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
