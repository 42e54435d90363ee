"""Freshness: seconds from ``POST /v0/events`` until the events are visible in a pipe.

    .venv/bin/python -m bench.freshness            # ~10 min, writes docs/INGESTION.md
    .venv/bin/python -m bench.freshness --help

The system runs as ``make run`` runs it (engage/dev.py), on free 127.0.0.1 ports with a temporary
ENGAGE_HOME: ``engage generate`` a small demo dataset into the landing folder, ``engage ingest``,
then ``dagster dev -w workspace.yaml`` (DAGSTER_HOME=$ENGAGE_HOME/dagster, the landing sensor on)
and ``engage serve``.

Each trial posts a small batch of events whose ``event_type`` is a unique marker (timestamps: now)
at t, then polls ``event_metrics.json`` until the marker shows with all its events: t_visible − t.
Trials start at a random offset (0..the sensor's period) after the previous one became visible, so
they sample every phase of the sensor's cycle; the period is the larger of
ENGAGE_SENSOR_INTERVAL_SECONDS and the 5 s at which Dagster's sensor daemon wakes up. One warm-up
trial (the first run after start-up) is reported apart.

Afterwards every process is stopped and the Dagster instance (its SQLite storage) is read for the
breakdown of each trial: the run that published the snapshot in which the marker first showed
(the snapshot id comes from the ``X-Engage-Snapshot`` header), its sensor tick, queueing, launch,
the three steps (load, dbt, publish), and the time the API took to show the new snapshot.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    BIN_DIR,
    PROJECT_DIR,
    Processes,
    dump_json,
    engage_env,
    free_port,
    install_signal_handlers,
    machine_busy_seconds,
    machine_info,
    machine_line,
    md_table,
    percentile,
    remove_tree,
    temp_home,
    QuietWaiter,
    wait_http,
    write_doc_section,
)

SECTION = "freshness"
STEPS = ("load_landing_files", "engage_dbt_models", "published_snapshot")


@dataclass
class Trial:
    index: int
    marker: str
    request_id: str
    t_post: float
    t_ack: float = 0.0
    t_visible: float | None = None
    snapshot_id: str | None = None
    polls: int = 0
    warmup: bool = False
    breakdown: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    dbt: dict | None = None  # dbt's run_results.json summary, read right after the trial
    notes: dict = field(default_factory=dict)

    @property
    def latency(self) -> float | None:
        return None if self.t_visible is None else self.t_visible - self.t_post


def sensor_daemon_loop_seconds() -> int:
    """How often Dagster's sensor daemon wakes up: a fixed constant of Dagster's, not configurable."""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    return MIN_INTERVAL_LOOP_TIME


def sensor_period(args) -> int:
    """Seconds between two looks of the landing sensor: its minimum interval, but at least the daemon's loop."""
    return max(args.sensor_interval, sensor_daemon_loop_seconds())


# -- HTTP ---------------------------------------------------------------------------------------


def post_events(port: int, token: str, lines: list[dict], request_id: str) -> float:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in lines)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v0/events?name=user_events", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson",
                 "X-Request-ID": request_id})
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.loads(resp.read())
    if payload.get("successful_rows") != len(lines):
        raise RuntimeError(f"POST /v0/events accepted {payload} of {len(lines)} rows")
    return time.time()


def marker_count(port: int, token: str, marker: str, start: str, end: str) -> tuple[int, str | None]:
    """(event_count of the marker in event_metrics, X-Engage-Snapshot) — (0, …) while not visible."""
    q = urllib.parse.urlencode({"start_date": start, "end_date": end, "limit": 10000})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v0/pipes/event_metrics.json?{q}",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            data = json.loads(resp.read())
            snapshot = resp.headers.get("X-Engage-Snapshot")
    except urllib.error.HTTPError as exc:  # 503 before the first snapshot, say
        return 0, exc.headers.get("X-Engage-Snapshot")
    except (OSError, ValueError) as exc:  # a slow or failed poll is not a visible marker: poll again
        print(f"    (poll failed: {type(exc).__name__}: {exc})")
        return 0, None
    for row in data.get("data", []):
        if row.get("event_type") == marker:
            return int(row["event_count"]), snapshot
    return 0, snapshot


def run_trial(trial: Trial, port: int, token: str, events: int, timeout: float, poll: float,
              procs: Processes, home: Path) -> Trial:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None)
    rows = [{"timestamp": now.strftime("%Y-%m-%d %H:%M:%S"), "user_id": f"{trial.marker}-u{k % 3}",
             "event_type": trial.marker, "session_id": f"{trial.marker}-s", "duration": k,
             "device": "desktop", "platform": "web", "page": "/freshness", "country": "US",
             "region": "California", "city": "San Francisco"} for k in range(events)]
    start = (now - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    end = (now + dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    trial.t_post = time.time()
    trial.t_ack = post_events(port, token, rows, trial.request_id)
    deadline = trial.t_post + timeout
    while time.time() < deadline:
        count, snapshot = marker_count(port, token, trial.marker, start, end)
        trial.polls += 1
        if count == events:
            trial.t_visible, trial.snapshot_id = time.time(), snapshot
            trial.dbt = latest_dbt_results(home)
            return trial
        if count > events:
            raise RuntimeError(f"marker {trial.marker}: {count} events visible, {events} posted")
        procs.check_alive()
        procs.remember_descendants()
        time.sleep(poll)
    return trial


# -- Dagster breakdown --------------------------------------------------------------------------------


def dagster_timeline(dagster_home: Path) -> tuple[dict[str, dict], list[tuple[float, list[str]]]]:
    """Runs of refresh_job ({run_id: events and snapshot}) and the landing sensor's ticks [(time, run_ids)]."""
    import warnings

    warnings.simplefilter("ignore")
    from dagster import DagsterEventType, DagsterInstance, RunsFilter
    from dagster._core.definitions.run_request import InstigatorType

    instance = DagsterInstance.from_config(str(dagster_home))
    runs: dict[str, dict] = {}
    try:
        for rec in instance.get_run_records(filters=RunsFilter(job_name="refresh_job")):
            run_id = rec.dagster_run.run_id
            info: dict = {"status": rec.dagster_run.status.value, "created": rec.create_timestamp.timestamp(),
                          "steps": {}, "snapshot_id": None, "files": None, "dbt_step_events": [], "planned_events": 0}
            for entry in instance.all_logs(run_id):
                ev = entry.dagster_event
                if ev is None:
                    continue
                kind, ts = ev.event_type, entry.timestamp
                if ev.step_key == "engage_dbt_models":
                    info["dbt_step_events"].append((ts, kind.value))
                if kind == DagsterEventType.ENGINE_EVENT and (ev.message or "").startswith("Started process"):
                    info.setdefault("process_started", ts)  # the run worker's first event (dagster/_cli/api.py)
                if kind == DagsterEventType.ENGINE_EVENT and "Launched in" in (ev.message or ""):
                    info["launched_warm"] = "warm run worker" in ev.message  # orchestration/warm_launcher.py
                if kind.value.endswith("_PLANNED"):  # written by the sensor daemon before RUN_ENQUEUED
                    info["planned_events"] += 1
                if kind in (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_DEQUEUED, DagsterEventType.RUN_STARTING,
                            DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                    info.setdefault(kind.value, ts)
                elif kind == DagsterEventType.STEP_START:
                    info["steps"].setdefault(ev.step_key, {})["start"] = ts
                elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                    info["steps"].setdefault(ev.step_key, {})["end"] = ts
                elif kind == DagsterEventType.ASSET_MATERIALIZATION:
                    mat = ev.event_specific_data.materialization
                    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
                    if "snapshot_id" in meta:
                        info["snapshot_id"] = str(meta["snapshot_id"])
                    if "files_loaded" in meta and mat.asset_key.path == ["raw", "user_events"]:
                        info["files"] = meta.get("files_loaded")
            runs[run_id] = info
        ticks: list[tuple[float, list[str]]] = []
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == "landing_sensor":
                for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100_000):
                    ticks.append((tick.timestamp, list(tick.run_ids)))
        return runs, sorted(ticks)
    finally:
        instance.dispose()


def _iso(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _summarize_run_results(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    starts, ends = [], []
    for r in data.get("results", []):
        for phase in r.get("timing", []):
            if phase.get("started_at") and phase.get("completed_at"):
                starts.append(_iso(phase["started_at"]))
                ends.append(_iso(phase["completed_at"]))
    if not starts:
        return None
    kinds = [r["unique_id"].split(".", 1)[0] for r in data["results"]]
    return {"first_start": min(starts), "last_end": max(ends), "models": kinds.count("model"),
            "tests": kinds.count("test"), "elapsed": data.get("elapsed_time"),
            "invocation_id": data.get("metadata", {}).get("invocation_id")}


def latest_dbt_results(home: Path) -> dict | None:
    """dbt's run_results.json of the latest refresh, where the pipeline keeps its dbt target
    ($ENGAGE_HOME/state/dbt_target); read right after each trial, before the next run overwrites it."""
    return _summarize_run_results(home / "state" / "dbt_target" / "run_results.json")


def dbt_results(run_id: str, trial_results: dict | None) -> dict | None:
    """dbt's own timing for a run: the copy read after the trial, else dagster-dbt's per-invocation
    folder (dbt_project/target/engage_dbt_models-<run_id[:7]>-*/)."""
    if trial_results:
        return trial_results
    target = PROJECT_DIR / "dbt_project" / "target"
    for path in sorted(target.glob(f"engage_dbt_models-{run_id[:7]}-*/run_results.json")):
        res = _summarize_run_results(path)
        if res:
            return res
    return None


def attach_breakdown(trials: list[Trial], runs: dict[str, dict], ticks: list[tuple[float, list[str]]]) -> None:
    """Components of each trial's latency; they add up to it exactly (t_post → t_visible)."""
    by_snapshot = {r["snapshot_id"]: (rid, r) for rid, r in runs.items() if r.get("snapshot_id")}
    tick_of = {rid: ts for ts, rids in ticks for rid in rids}
    for t in trials:
        if t.snapshot_id not in by_snapshot or t.t_visible is None:
            continue
        rid, r = by_snapshot[t.snapshot_id]
        steps = r["steps"]
        enq = r.get("PIPELINE_ENQUEUED", r["created"])
        starting, start = r.get("PIPELINE_STARTING"), r.get("PIPELINE_START")
        if starting is None or start is None or any("start" not in steps.get(k, {}) or "end" not in steps.get(k, {})
                                                    for k in STEPS):
            continue
        t.run_id = rid
        t.notes["planned_events"] = r.get("planned_events", 0)
        if "launched_warm" in r:
            t.notes["launched_warm"] = r["launched_warm"]
        tick = tick_of.get(rid)
        b: dict[str, float] = {}
        if tick is None:
            b["sensor: post → run enqueued (tick unknown)"] = enq - t.t_post
        else:  # a file that lands while a tick is being evaluated is seen by that tick
            b["sensor: post → tick"] = max(0.0, tick - t.t_post)
            b["sensor: tick → run enqueued"] = enq - max(tick, t.t_post)
        b["run queue → launched"] = starting - enq
        spawned = r.get("process_started")
        if spawned is not None and starting <= spawned <= start:
            b["run worker: launch → running (warm: hand-over; new: process start, imports)"] = spawned - starting
            b["run worker: definitions loaded, run set-up"] = start - spawned
        else:
            b["run worker start-up (process, imports, definitions)"] = start - starting
        b["step load_landing_files"] = steps["load_landing_files"]["end"] - steps["load_landing_files"]["start"]
        dbt_step = steps["engage_dbt_models"]
        res = dbt_results(rid, t.dbt)
        if res and dbt_step["start"] <= res["first_start"] <= res["last_end"] <= dbt_step["end"] + 1:
            b["dbt: start-up + parse (before the first node)"] = res["first_start"] - dbt_step["start"]
            b["dbt: models and tests (first node → last node)"] = res["last_end"] - res["first_start"]
            b["dbt: after the last node (results → Dagster events)"] = dbt_step["end"] - res["last_end"]
            t.notes["dbt_nodes"] = f"{res['models']} models + {res['tests']} tests"
            t.notes["dagster_events_after_dbt"] = sum(1 for ts, _ in r.get("dbt_step_events", [])
                                                      if ts > res["last_end"])
        else:
            b["step engage_dbt_models"] = dbt_step["end"] - dbt_step["start"]
        b["step published_snapshot"] = steps["published_snapshot"]["end"] - steps["published_snapshot"]["start"]
        b["Dagster between steps"] = ((steps["load_landing_files"]["start"] - start)
                                      + (dbt_step["start"] - steps["load_landing_files"]["end"])
                                      + (steps["published_snapshot"]["start"] - dbt_step["end"]))
        b["publish → visible in the API (pointer check + poll)"] = t.t_visible - steps["published_snapshot"]["end"]
        t.breakdown = b


def remove_dbt_targets(runs: dict[str, dict]) -> None:
    """The dbt target folders of this benchmark's runs (dagster-dbt writes them into the project)."""
    import shutil

    target = PROJECT_DIR / "dbt_project" / "target"
    for rid in runs:
        for d in target.glob(f"engage_dbt_models-{rid[:7]}-*"):
            shutil.rmtree(d, ignore_errors=True)


# -- report -----------------------------------------------------------------------------------------


def fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.1f}"


def report(args, info, trials: list[Trial], warm: Trial | None, setup: dict, busy_other: float) -> str:
    lat = [t.latency for t in trials if t.latency is not None]
    missed = [t for t in trials if t.latency is None]
    p50, p95, mx = percentile(lat, 50), percentile(lat, 95), max(lat) if lat else float("nan")
    met = not missed and p95 <= args.goal
    parts = [
        machine_line(info),
        "",
        f"Parameters: `engage generate --events {args.demo_events:,} --days 30 --late-files 2 --bad-rows 0.001`, "
        f"`engage ingest` ({setup['ingest_s']:.1f} s), then `dagster dev -w workspace.yaml` and `engage serve` as "
        f"`make run` starts them; landing sensor minimum interval {args.sensor_interval} s (Dagster's sensor daemon "
        f"wakes every {sensor_daemon_loop_seconds()} s); {len(trials)} trials of "
        f"{args.events} events with a unique `event_type` (timestamps: now) posted to `/v0/events` (202), "
        f"polling `event_metrics.json` every {args.poll:g} s; trials start 0–{sensor_period(args)} s "
        f"(random) after the previous one became visible. Other processes used {busy_other:.2f} cores on average "
        "during the trials (from /proc/stat, minus this benchmark's processes: other sessions on the machine).",
        "",
        md_table(["", "p50", "p95", "max", "min", "trials"],
                 [["**post → visible (s)**", f"**{fmt(p50)}**", f"**{fmt(p95)}**", f"**{fmt(mx)}**",
                   fmt(min(lat)) if lat else "n/a", f"{len(lat)} of {len(trials)} visible within {args.timeout:g} s"]]),
        "",
        f"Goal: p95 ≤ {args.goal:g} s: " + ("**met**." if met else f"**not met** (p95 {fmt(p95)} s"
                                              + (f", {len(missed)} trials never visible" if missed else "") + ")."),
    ]
    if warm is not None and warm.latency is not None:
        parts[-1] += f" Warm-up trial (first run after start-up, not counted): {warm.latency:.1f} s."
    keys: list[str] = []
    for t in trials:
        for k in t.breakdown:
            if k not in keys:
                keys.append(k)
    explained = [t for t in trials if t.breakdown]
    if keys and explained:
        total_mean = sum(t.latency for t in explained) / len(explained)
        rows = []
        for k in keys:
            vals = [t.breakdown.get(k, 0.0) for t in explained]
            mean = sum(vals) / len(vals)
            rows.append([k, f"{mean:.1f}", fmt(percentile(vals, 50)), fmt(percentile(vals, 95)), fmt(max(vals)),
                         f"{100 * mean / total_mean:.0f}%"])
        rows.append(["**total (post → visible)**", f"**{total_mean:.1f}**",
                     fmt(percentile([t.latency for t in explained], 50)),
                     fmt(percentile([t.latency for t in explained], 95)),
                     fmt(max(t.latency for t in explained)), "100%"])
        parts += [
            "",
            f"Where the time goes, in seconds, for the {len(explained)} of {len(trials)} trials matched to the run "
            "that published the snapshot in which the marker first showed (Dagster event log, sensor ticks, dbt's "
            "run_results.json). The means add up to the mean latency; p50/p95 are per component.",
            "",
            md_table(["component", "mean", "p50", "p95", "max", "share of mean"], rows),
        ]
        nodes = sorted({t.notes["dbt_nodes"] for t in explained if "dbt_nodes" in t.notes})
        after = [t.notes["dagster_events_after_dbt"] for t in explained if "dagster_events_after_dbt" in t.notes]
        planned = [t.notes["planned_events"] for t in explained if "planned_events" in t.notes]
        in_warm_worker = [t.notes["launched_warm"] for t in explained if "launched_warm" in t.notes]
        if in_warm_worker:
            parts += ["", f"{sum(in_warm_worker)} of {len(in_warm_worker)} runs started in a warm run worker "
                          "(orchestration/warm_launcher.py); the others, if any, in a new process."]
        if nodes:
            parts += ["", f"dbt built {' / '.join(nodes)} per run (the project as it was at each run). Dagster "
                          f"events per run, median: {percentile(planned, 50):.0f} written while the run was created "
                          f"(materializations and checks planned), {percentile(after, 50):.0f} written by the dbt step "
                          "after dbt's last node (materializations, asset-check results)."]
    parts += [
        "",
        "Per trial (s): " + ", ".join(fmt(t.latency) if t.latency is not None else "timeout" for t in trials) + ".",
    ]
    return "\n".join(parts)


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="measured trials (default 20)")
    ap.add_argument("--events", type=int, default=10, help="events per trial (default 10)")
    ap.add_argument("--demo-events", type=int, default=20_000, help="demo dataset loaded first (default 20000)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a trial counts as never visible")
    ap.add_argument("--poll", type=float, default=0.25, help="seconds between pipe polls (default 0.25)")
    ap.add_argument("--sensor-interval", type=int, default=None,
                    help="ENGAGE_SENSOR_INTERVAL_SECONDS for the run (default: the system's, from engage/settings.py)")
    ap.add_argument("--goal", type=float, default=30.0, help="p95 goal in seconds (default 30)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="seconds in all that the script may wait for other processes to go quiet (default 30)")
    ap.add_argument("--seed", type=int, default=None, help="random offsets between trials (default: random)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/INGESTION.md")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary ENGAGE_HOME (logs, Dagster storage)")
    args = ap.parse_args(argv)
    if args.sensor_interval is None:
        from engage.settings import Settings

        args.sensor_interval = Settings.model_fields["sensor_interval_seconds"].default

    install_signal_handlers()
    rng = random.Random(args.seed)
    info = machine_info()
    home = temp_home("engage-bench-fresh-")
    token = "bench-" + secrets.token_urlsafe(16)
    env = engage_env(home, token, ENGAGE_SENSOR_INTERVAL_SECONDS=str(args.sensor_interval))
    interval = sensor_period(args)
    procs = Processes()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"freshness: ENGAGE_HOME={home}")
    trials: list[Trial] = []
    warm: Trial | None = None
    try:
        return _measure(args, rng, info, home, token, env, interval, procs, logs, trials)
    finally:
        procs.stop()
        if args.keep:
            print(f"kept {home}")
        else:
            remove_tree(home)


def _measure(args, rng, info, home, token, env, interval, procs, logs, trials) -> int:
    warm: Trial | None = None
    try:
        # Set-up, as engage/dev.py does it.
        from engage.dagster_home import ensure_dagster_home
        from engage.settings import Settings

        settings = Settings(home=home)
        settings.ensure_dirs()
        ensure_dagster_home(settings)  # writes $ENGAGE_HOME/dagster/dagster.yaml
        subprocess.run([BIN_DIR / "engage", "generate", "--events", str(args.demo_events), "--days", "30",
                        "--late-files", "2", "--bad-rows", "0.001", "--out", str(settings.landing)],
                       check=True, env=env, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL,
                       stderr=(logs / "generate.log").open("ab"))
        t0 = time.perf_counter()
        subprocess.run([BIN_DIR / "engage", "ingest"], check=True, env=env, cwd=PROJECT_DIR,
                       stdout=(logs / "ingest.log").open("ab"), stderr=subprocess.STDOUT)
        setup = {"ingest_s": time.perf_counter() - t0}
        print(f"  engage ingest of {args.demo_events:,} demo events: {setup['ingest_s']:.1f} s")

        dport, aport = free_port(), free_port()
        procs.start("dagster dev", [BIN_DIR / "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(dport)],
                    env, logs / "dagster.log")
        procs.start("engage serve", [BIN_DIR / "engage", "serve", "--host", "127.0.0.1", "--port", str(aport)],
                    env, logs / "api.log")
        t0 = time.perf_counter()
        wait_http(f"http://127.0.0.1:{aport}/ready", 120, procs)
        wait_http(f"http://127.0.0.1:{dport}/server_info", 180, procs)
        setup["dagster_up_s"] = time.perf_counter() - t0
        procs.remember_descendants()
        print(f"  dagster dev on 127.0.0.1:{dport}, engage serve on 127.0.0.1:{aport} ({setup['dagster_up_s']:.1f} s)")

        tag = secrets.token_hex(3)
        warm = run_trial(Trial(-1, f"fresh_{tag}_warmup", f"fresh-{tag}-warmup", 0.0, warmup=True),
                         aport, token, args.events, max(args.timeout, 240), args.poll, procs, home)
        if warm.latency is None:
            raise RuntimeError(f"the warm-up trial never became visible (see {logs}, --keep keeps them)")
        print(f"  warm-up trial: {warm.latency:.1f} s")
        quiet = QuietWaiter(args.quiet_wait, exclude=lambda: our_cpu(procs))
        busy0, ours0, t_start = machine_busy_seconds(), our_cpu(procs), time.time()
        for i in range(args.trials):
            quiet.wait()
            time.sleep(rng.uniform(0, interval))
            t = run_trial(Trial(i, f"fresh_{tag}_{i:02d}", f"fresh-{tag}-{i:02d}", 0.0),
                          aport, token, args.events, args.timeout, args.poll, procs, home)
            trials.append(t)
            print(f"  trial {i + 1:2d}: " + (f"{t.latency:5.1f} s  ({t.polls} polls, snapshot {t.snapshot_id})"
                                             if t.latency is not None else "not visible (timeout)"))
        busy_other = max(0.0, (machine_busy_seconds() - busy0 - (our_cpu(procs) - ours0))) / max(1e-9, time.time() - t_start)
    finally:
        procs.stop()

    # Every process is stopped: read the Dagster instance's SQLite storage for the breakdown.
    try:
        runs, ticks = dagster_timeline(settings.dagster_home)
        attach_breakdown(trials + ([warm] if warm else []), runs, ticks)
        remove_dbt_targets(runs)
    except Exception as exc:  # the headline numbers stand without the breakdown
        print(f"  (no breakdown: {type(exc).__name__}: {exc})")
        runs, ticks = {}, []
    text = report(args, info, trials, warm, setup, busy_other)
    print()
    print(text)
    if not args.no_doc:
        write_doc_section(SECTION, text)
        print("\n(docs/INGESTION.md updated)")
    if args.json:
        dump_json(args.json, {"machine": info, "args": vars(args), "setup": setup,
                              "trials": [t.__dict__ for t in trials], "warmup": warm.__dict__ if warm else None,
                              "runs": runs})
    return 0 if any(t.latency is not None for t in trials) else 1


def our_cpu(procs: Processes) -> float:
    """CPU seconds used so far by this process, the processes it started and their descendants."""
    total = time.process_time()
    try:
        import psutil

        seen = set()
        for _, p in procs.procs:
            try:
                root = psutil.Process(p.pid)
                for q in [root, *root.children(recursive=True)]:
                    if q.pid not in seen:
                        seen.add(q.pid)
                        ct = q.cpu_times()
                        total += ct.user + ct.system + ct.children_user + ct.children_system
            except psutil.Error:
                pass
    except ImportError:
        pass
    return total


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("interrupted; everything this benchmark started is stopped", file=sys.stderr)
        sys.exit(130)
