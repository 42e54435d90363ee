"""Events API throughput: how many events per second ``POST /v0/events`` accepts over loopback.

    .venv/bin/python -m bench.events_throughput            # ~1.5 min, writes docs/INGESTION.md
    .venv/bin/python -m bench.events_throughput --help

What it does:
1. Generates realistic events with ``engage.generate`` (one day, Zipf users, all timestamp forms,
   0.1% invalid lines by default) and cuts them into request bodies of ``--batch`` lines, plain and
   gzip (level 6), before anything is timed.
2. Measures ``engage.events.accept_events`` in-process (no HTTP) as the ceiling of the server's work:
   events/s, CPU per 1,000 events and how many requests each validation took together (threads
   calling at once are validated together, as concurrent requests are in the server).
3. Starts ``engage serve`` (one uvicorn process, as deployed) on a free 127.0.0.1 port with a
   temporary ENGAGE_HOME and ENGAGE_ADMIN_TOKEN.
4. For each mode (plain / gzip, without / with ``wait=true``): a warm-up, then ``--runs`` runs of
   ``--duration`` seconds in which ``--clients`` threads post bodies over keep-alive connections
   (http.client) as fast as answers come back. Accepted events/s = successful_rows summed over the
   answers / the run's wall time. Latency = send to full answer, per request.
5. When the goal is missed (or with ``--profile``), one more run with py-spy attached to the server
   shows where the server's time goes.
6. Writes the results between this script's markers in docs/INGESTION.md and stops the server.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    BIN_DIR,
    Processes,
    dump_json,
    engage_env,
    free_port,
    generated_lines,
    install_signal_handlers,
    machine_busy_seconds,
    machine_info,
    machine_line,
    md_table,
    median,
    percentile,
    remove_tree,
    temp_home,
    QuietWaiter,
    wait_http,
    write_doc_section,
)

SECTION = "events_throughput"
STOP = threading.Event()  # set on the way out: client threads stop before the server does
MODES = {  # name -> (gzip, wait)
    "plain": (False, False),
    "plain wait=true": (False, True),
    "gzip": (True, False),
    "gzip wait=true": (True, True),
}


@dataclass
class RunResult:
    mode: str
    seconds: float
    requests: int
    accepted: int
    quarantined: int
    errors: int
    latencies_ms: list[float] = field(repr=False)
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float  # machine busy time not spent by the server nor this client (other sessions)

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


# -- data ---------------------------------------------------------------------------------------


def make_bodies(events: int, batch: int, bad_rows: float, seed: int) -> tuple[list[bytes], list[bytes]]:
    lines = generated_lines(events, days=1, seed=seed, bad_rows=bad_rows)
    plain = [b"".join(lines[i:i + batch]) for i in range(0, len(lines) - batch + 1, batch)]
    gz = [gzip.compress(b, compresslevel=6, mtime=0) for b in plain]
    return plain, gz


# -- load ---------------------------------------------------------------------------------------


def client_loop(port: int, token: str, bodies: list[bytes], gz: bool, wait: bool, start_index: int,
                deadline: float, out: dict) -> None:
    """Post bodies back to back on one keep-alive connection until ``deadline`` (perf_counter)."""
    path = "/v0/events?name=user_events" + ("&wait=true" if wait else "")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat, accepted, quarantined, errors, last_end = [], 0, 0, 0, None
    i = start_index
    try:
        while time.perf_counter() < deadline and not STOP.is_set():
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            t1 = time.perf_counter()
            last_end = t1
            if resp.status in (200, 202):
                payload = json.loads(data)
                accepted += payload["successful_rows"]
                quarantined += payload["quarantined_rows"]
                lat.append((t1 - t0) * 1000)
            else:
                errors += 1
                out.setdefault("error_samples", []).append(f"{resp.status} {data[:200]!r}")
    except (OSError, http.client.HTTPException) as exc:  # the server went away (stopped, crashed)
        errors += 1
        out.setdefault("error_samples", []).append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    out.update(lat=lat, accepted=accepted, quarantined=quarantined, errors=errors, last_end=last_end)


def server_cpu_seconds(pid: int) -> float:
    try:
        import psutil

        p = psutil.Process(pid)
        total = sum(p.cpu_times()[:2])
        for c in p.children(recursive=True):
            try:
                total += sum(c.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except Exception:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(mode: str, port: int, token: str, bodies: list[bytes], clients: int, seconds: float,
             server_pid: int) -> RunResult:
    gz, wait = MODES[mode]
    outs = [dict() for _ in range(clients)]
    cpu0, ccpu0, busy0 = server_cpu_seconds(server_pid), time.process_time(), machine_busy_seconds()
    start = time.perf_counter()
    deadline = start + seconds
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(port, token, bodies, gz, wait, k * len(bodies) // clients, deadline, outs[k]))
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    ends = [o["last_end"] for o in outs if o.get("last_end")]
    elapsed = (max(ends) if ends else time.perf_counter()) - start
    cpu1, ccpu1, busy1 = server_cpu_seconds(server_pid), time.process_time(), machine_busy_seconds()
    for o in outs:
        for sample in o.get("error_samples", [])[:3]:
            print(f"    error answer: {sample}", file=sys.stderr)
    return RunResult(
        mode=mode, seconds=elapsed,
        requests=sum(len(o.get("lat", [])) + o.get("errors", 0) for o in outs),
        accepted=sum(o.get("accepted", 0) for o in outs),
        quarantined=sum(o.get("quarantined", 0) for o in outs),
        errors=sum(o.get("errors", 0) for o in outs),
        latencies_ms=[x for o in outs for x in o.get("lat", [])],
        server_cpu_s=cpu1 - cpu0, client_cpu_s=ccpu1 - ccpu0,
        other_cpu_s=max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (ccpu1 - ccpu0)),
    )


def clear_landing(home: Path) -> None:
    """Drop the batch files of the previous run (outside the timed window) so the disk stays small."""
    for d in (home / "landing", home / "state" / "rejected"):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)


# -- in-process ceiling -----------------------------------------------------------------------------


@dataclass
class InProcess:
    events_per_s: float
    cpu_ms_per_1000: float  # this process's CPU time (all threads) per 1,000 accepted events
    requests_per_validation: float


def in_process(bodies: list[bytes], threads: int, seconds: float, home: Path) -> InProcess:
    """accept_events() alone (no HTTP), ``threads`` callers at a time, as the server runs it."""
    from engage.events import accept_events, batcher
    from engage.settings import Settings

    settings = Settings(home=home)
    settings.ensure_dirs()
    counts = [0] * threads

    def work(k: int, deadline: float) -> float:
        i = k * len(bodies) // threads
        while time.perf_counter() < deadline:
            r = accept_events(settings, bodies[i % len(bodies)], uuid.uuid4().hex, False)
            counts[k] += r.successful_rows
            i += 1
        return time.perf_counter()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: work(k, time.perf_counter() + 0.5), range(threads)))  # warm-up
        counts[:] = [0] * threads
        validations = batcher.validations.copy()
        cpu = time.process_time()
        start = time.perf_counter()
        ends = list(pool.map(lambda k: work(k, start + seconds), range(threads)))
        cpu = time.process_time() - cpu
    elapsed = max(ends) - start
    validations = batcher.validations - validations
    clear_landing(home)
    return InProcess(events_per_s=sum(counts) / elapsed, cpu_ms_per_1000=1e6 * cpu / max(1, sum(counts)),
                     requests_per_validation=sum(n * c for n, c in validations.items()) / max(1, validations.total()))


# -- profile ---------------------------------------------------------------------------------------

# Where a server sample is counted: the first (leaf-most) frame matching one of these, else "other".
PROFILE_BUCKETS = [
    # validate_together's own line is con.execute() (binding, planning), and result_arrow runs the
    # statement (lazily, as its rows are fetched): the validation SQL runs in C under those frames
    ("DuckDB: execute validation SQL", re.compile(
        r"^(submit|_submit|result_arrow|fetch_arrow_table|to_arrow_table) \(.*duckdb|^validate_together \(")),
    ("DuckDB: bind", re.compile(r"^bind \(.*duckdb")),
    ("DuckDB: parse/prepare SQL", re.compile(r"^prepare\w* \(.*duckdb")),
    ("DuckDB: register Arrow table / other client calls", re.compile(r"\(.*duckdb/")),
    ("validation input: line numbers, pa.array, register", re.compile(
        r"^(validate|_register_input|_numbered_apart|<genexpr>) \(.*engage/validate\.py")),
    ("batcher: queue, hand-over", re.compile(r"^(ValidationBatcher\.\w+|_validate_each) \(.*engage/events\.py")),
    ("split_lines() (decode + split)", re.compile(r"^split_lines \(")),
    ("write_atomically() (write, fsync, rename)", re.compile(r"^write_atomically \(")),
    ("accept_events(): to_pylist, filter, join, encode", re.compile(r"^(accept_events|_valid_lines|_rejected_records) \(")),
    ("read_body() (gzip inflate, body chunks)", re.compile(r"^read_body \(")),
    ("uvicorn/httptools: HTTP parsing, socket I/O", re.compile(r"\((?:.*/)?(uvicorn|httptools|uvloop|asyncio)/")),
    ("starlette/fastapi: routing, middleware, threadpool hand-off", re.compile(r"\(.*(starlette|fastapi|anyio)/")),
    ("serving/ (auth, middleware, errors)", re.compile(r"\(.*serving/")),
    ("logging (access log)", re.compile(r"\(.*logging/")),
]


WAITING_FRAME = re.compile(r"^(Condition|Event|Semaphore)?\.?wait \((?:.*/)?threading\.py")


def summarize_profile(raw: Path) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, samples per bucket, top leaf functions) from py-spy's raw (collapsed) output."""
    buckets: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if frames and WAITING_FRAME.search(frames[-1]):
            continue  # a thread blocked on a lock or an event (py-spy counts it): no CPU
        total += n
        leaves[frames[-1] if frames else "?"] += n
        for frame in reversed(frames):
            name = next((b for b, rx in PROFILE_BUCKETS if rx.search(frame)), None)
            if name:
                buckets[name] += n
                break
        else:
            buckets["other (Python start-up frames, threading)"] += n
    return total, buckets.most_common(), leaves.most_common(12)


def profile_server(server_pid: int, mode: str, port: int, token: str, bodies: list[bytes], clients: int,
                   seconds: float, workdir: Path) -> dict | None:
    py_spy = shutil.which("py-spy", path=str(BIN_DIR)) or shutil.which("py-spy")
    if not py_spy:
        print("  (py-spy not installed: pip install -e '.[bench]'; skipping the profile)")
        return None
    out = workdir / "server-profile.txt"
    # --nonblocking: sampling without pausing the server (lower overhead, same picture).
    cmd = [py_spy, "record", "--pid", str(server_pid), "--rate", "250", "--duration", str(int(seconds) + 1),
           "--format", "raw", "--output", str(out), "--nonblocking", "--threads", "--subprocesses"]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        result = run_load(mode, port, token, bodies, clients, seconds, server_pid)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if not out.exists():
        print(f"  (py-spy failed: {err.decode(errors='replace').strip()[-300:]})")
        return None
    total, buckets, leaves = summarize_profile(out)
    return {"mode": mode, "events_per_s": result.events_per_s, "samples": total, "buckets": buckets,
            "leaves": leaves, "server_cpu_s": result.server_cpu_s, "seconds": result.seconds,
            "accepted": result.accepted}


# -- report -----------------------------------------------------------------------------------------


def report(args, info, bodies_plain, bodies_gz, results: dict[str, list[RunResult]], ceiling: dict[str, InProcess],
           prof: dict | None) -> str:
    rows = []
    best = 0.0
    for mode, runs in results.items():
        eps = [r.events_per_s for r in runs]
        lat = [x for r in runs for x in r.latencies_ms]
        secs = sum(r.seconds for r in runs)
        acc = sum(r.accepted for r in runs)
        best = max(best, median(eps))
        rows.append([
            f"`{mode}`", f"**{median(eps):,.0f}**", " / ".join(f"{e:,.0f}" for e in eps),
            f"{sum(r.requests for r in runs) / secs:,.1f}",
            f"{percentile(lat, 50):.1f}", f"{percentile(lat, 99):.1f}",
            f"{sum(r.server_cpu_s for r in runs) / secs:.2f}",
            f"{1000 * sum(r.server_cpu_s for r in runs) / max(1, acc) * 1000:.1f}",
            f"{sum(r.client_cpu_s for r in runs) / secs:.2f}",
            f"{sum(r.other_cpu_s for r in runs) / secs:.2f}",
            sum(r.errors for r in runs),
        ])
    plain_eps = median([r.events_per_s for r in results.get("plain", [])]) if "plain" in results else best
    met = plain_eps >= args.goal
    plain_runs = results.get("plain", [])
    plain_accepted = sum(r.accepted for r in plain_runs)
    # CPU per 1,000 events of the server and the client together, from the plain runs
    cpu_per_1000 = 1e6 * sum(r.server_cpu_s + r.client_cpu_s for r in plain_runs) / max(1, plain_accepted)
    others = sum(r.other_cpu_s for r in plain_runs) / max(1e-9, sum(r.seconds for r in plain_runs))
    avg_plain = sum(map(len, bodies_plain)) / len(bodies_plain)
    avg_gz = sum(map(len, bodies_gz)) / len(bodies_gz)
    parts = [
        machine_line(info),
        "",
        "Parameters: "
        + ("`engage serve` (one uvicorn process, uvloop + httptools)" if args.workers == 1
           else f"uvicorn `serving.app:create_app` with {args.workers} worker processes")
        + " on 127.0.0.1; "
        f"{args.clients} client threads in one process, each with one keep-alive `http.client` connection, "
        f"posting back to back; bodies of {args.batch:,} lines from `engage.generate` "
        f"({args.bad_rows:.1%} invalid lines; {avg_plain / 1024:,.0f} KiB plain, {avg_gz / 1024:,.0f} KiB gzip level 6, "
        f"{len(bodies_plain)} distinct bodies); per mode {args.warmup:g} s warm-up then {args.runs} runs of "
        f"{args.duration:g} s. The client shares the 2 cores with the server.",
        "",
        md_table(
            ["mode", "accepted events/s (median)", "each run", "requests/s", "p50 ms", "p99 ms",
             "server CPU (cores)", "server CPU ms / 1,000 events", "client CPU (cores)",
             "other processes' CPU (cores)", "errors"],
            rows,
        ),
        "",
        f"In-process ceiling (no HTTP): `engage.events.accept_events` called directly on the same bodies "
        f"(plain, not durable), {args.ceiling_seconds:g} s each; calls made at once are validated together "
        "(`engage.events.ValidationBatcher`), as concurrent requests are in the server:",
        "",
        md_table(["calls", "events/s", "CPU ms / 1,000 events", "calls per validation (mean)"],
                 [[label, f"**{c.events_per_s:,.0f}**", f"{c.cpu_ms_per_1000:.1f}", f"{c.requests_per_validation:.2f}"]
                  for label, c in ceiling.items()]) if ceiling else "(not measured)",
        "",
        f"Goal: ≥ {args.goal:,} accepted events/s (plain, batches of {args.batch:,}): "
        + (f"**met** ({plain_eps:,.0f})." if met else f"**not met** ({plain_eps:,.0f}, {plain_eps / args.goal:.0%} of it)."),
    ]
    if plain_accepted:
        cores = os.cpu_count() or 1
        parts += [
            "",
            f"CPU-bound estimate (not a measurement): server and client spent {cpu_per_1000:.1f} ms of CPU per 1,000 "
            f"events in the `plain` runs, while other processes kept {others:.2f} of the {cores} cores busy; "
            f"at that cost the {cores} cores would sustain about {cores * 1e6 / cpu_per_1000:,.0f} events/s "
            f"with no other load, and {max(0.0, cores - others) * 1e6 / cpu_per_1000:,.0f} events/s with the load "
            "measured during the runs.",
        ]
    if prof:
        parts += [
            "",
            f"Server profile (py-spy, 250 Hz, all threads, `{prof['mode']}` load, {prof['seconds']:.1f} s, "
            f"{prof['events_per_s']:,.0f} events/s while profiled, {prof['samples']:,} samples of busy threads, "
            "threads blocked in a lock or event wait left out): each sample is counted under the innermost matching frame.",
            "",
            md_table(["where", "share of busy samples"],
                     [[name, f"{100 * n / max(1, prof['samples']):.1f}%"] for name, n in prof["buckets"]]),
            "",
            "Top leaf frames: "
            + "; ".join(f"`{leaf}` {100 * n / max(1, prof['samples']):.1f}%" for leaf, n in prof["leaves"][:8]) + ".",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    ap.add_argument("--workers", type=int, default=1,
                    help="1: `engage serve` (default); N>1: uvicorn with N worker processes, to compare")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="seconds in all that the script may wait for other processes to go quiet (default 20)")
    ap.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode; the median is reported (default 3)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    ap.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per mode (default 1.5)")
    ap.add_argument("--events", type=int, default=60_000, help="distinct generated events to cycle through")
    ap.add_argument("--bad-rows", type=float, default=0.001, help="fraction of invalid lines (default 0.001)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    ap.add_argument("--ceiling-seconds", type=float, default=2.5, help="seconds per in-process measurement (0: skip)")
    ap.add_argument("--goal", type=int, default=50_000, help="events/s goal (default 50000)")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="py-spy profile of the server: when the goal is missed (auto), always, never")
    ap.add_argument("--profile-seconds", type=float, default=8.0)
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/INGESTION.md")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary ENGAGE_HOME (for its logs)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")

    install_signal_handlers()
    info = machine_info()
    home = temp_home("engage-bench-tput-")
    procs = Processes()
    print(f"events_throughput: ENGAGE_HOME={home}")
    try:
        t = time.perf_counter()
        plain, gz = make_bodies(args.events, args.batch, args.bad_rows, args.seed)
        print(f"  {len(plain)} bodies of {args.batch} lines generated in {time.perf_counter() - t:.1f} s")

        quiet = QuietWaiter(args.quiet_wait)
        ceiling: dict[str, InProcess] = {}
        if args.ceiling_seconds > 0:
            quiet.wait(2.0)
            # 1 thread: one validation per request; more threads: the batcher validates the calls
            # waiting together. Bodies of 10 requests: what clients sending bigger batches get.
            x10 = [b"".join(plain[i:i + 10]) for i in range(0, len(plain) - 9, 10)]
            for label, bodies, threads in ((f"{args.batch:,} lines/call, 1 thread", plain, 1),
                                           (f"{args.batch:,} lines/call, 2 threads", plain, 2),
                                           (f"{args.batch:,} lines/call, {args.clients} threads", plain, args.clients),
                                           (f"{10 * args.batch:,} lines/call, 1 thread", x10, 1)):
                ceiling[label] = c = in_process(bodies, threads, args.ceiling_seconds, home / "inproc")
                print(f"  in-process accept_events, {label}: {c.events_per_s:,.0f} events/s, "
                      f"{c.cpu_ms_per_1000:.1f} ms CPU / 1,000 events, {c.requests_per_validation:.2f} calls/validation")
            remove_tree(home / "inproc")

        token = "bench-" + secrets.token_urlsafe(16)
        port = free_port()
        env = engage_env(home, token)
        if args.workers == 1:
            cmd = [BIN_DIR / "engage", "serve", "--host", "127.0.0.1", "--port", str(port)]
        else:  # the same app, N uvicorn worker processes (engage serve has no --workers yet)
            cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(args.workers), "--no-server-header"]
        server = procs.start("api server", cmd, env, home / "api.log")
        wait_http(f"http://127.0.0.1:{port}/health", 60, procs)
        print(f"  {' '.join(str(c) for c in cmd[-8:])} up (pid {server.pid})")
        quiet.exclude = lambda: server_cpu_seconds(server.pid)

        results: dict[str, list[RunResult]] = {}
        for mode in modes:
            bodies = gz if MODES[mode][0] else plain
            quiet.wait()
            run_load(mode, port, token, bodies, args.clients, args.warmup, server.pid)
            clear_landing(home)
            results[mode] = []
            for k in range(args.runs):
                r = run_load(mode, port, token, bodies, args.clients, args.duration, server.pid)
                procs.check_alive()
                clear_landing(home)
                results[mode].append(r)
                print(f"  {mode:16s} run {k + 1}: {r.events_per_s:9,.0f} events/s  {r.requests / r.seconds:6.1f} req/s  "
                      f"p50 {percentile(r.latencies_ms, 50):6.1f} ms  p99 {percentile(r.latencies_ms, 99):6.1f} ms  "
                      f"server CPU {r.server_cpu_s / r.seconds:.2f}  other CPU {r.other_cpu_s / r.seconds:.2f} cores  "
                      f"errors {r.errors}")

        plain_eps = median([r.events_per_s for r in results["plain"]]) if "plain" in results else None
        prof = None
        if args.profile == "always" or (args.profile == "auto" and plain_eps is not None and plain_eps < args.goal):
            print("  profiling the server with py-spy (plain)…")
            prof = profile_server(server.pid, "plain", port, token, plain, args.clients, args.profile_seconds, home)
            clear_landing(home)
            if prof:
                for name, n in prof["buckets"]:
                    print(f"    {100 * n / max(1, prof['samples']):5.1f}%  {name}")

        text = report(args, info, plain, gz, results, ceiling, prof)
        print()
        print(text)
        if not args.no_doc:
            write_doc_section(SECTION, text)
            print("\n(docs/INGESTION.md updated)")
        if args.json:
            dump_json(args.json, {"machine": info, "args": vars(args), "ceiling": {k: c.__dict__ for k, c in ceiling.items()}, "profile": prof,
                                  "runs": {m: [{k: v for k, v in r.__dict__.items() if k != "latencies_ms"}
                                               | {"p50_ms": percentile(r.latencies_ms, 50),
                                                  "p99_ms": percentile(r.latencies_ms, 99)} for r in rs]
                                           for m, rs in results.items()}})
        return 0
    finally:
        STOP.set()
        procs.stop()
        if args.keep:
            print(f"kept {home}")
        else:
            remove_tree(home)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("interrupted; everything this benchmark started is stopped", file=sys.stderr)
        sys.exit(130)
