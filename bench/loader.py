"""Loader benchmark: a large NDJSON file → raw tables. Rows/s, CPU time and peak RSS of the loading
process, and where its CPU time goes.

    .venv/bin/python -m bench.loader [--gigabytes 2.0] [--repeat 3]

Builds one NDJSON file of about the given size from generated events (cached in bench/data/),
then loads it `--repeat` times into fresh ENGAGE_HOMEs, each in its own process (`load_pending`),
measuring its wall time, CPU time and peak RSS, and how busy the rest of the machine was meanwhile
(other sessions share its 2 cores). Then it measures, in this process, the CPU time of each stage
of the loader on the 1M-row seed file, and writes both into its section of docs/INGESTION.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import QuietWaiter, machine_busy_seconds, machine_info, machine_line, md_table, write_doc_section

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
GOAL_ROWS_PER_SECOND = 500_000
CORES = os.cpu_count() or 1

LOAD_ONE = """
import json, sys, time
from engage.settings import Settings
from engage.loader import load_pending
started = time.perf_counter()
summary = load_pending(Settings())
print(json.dumps({**summary.as_dict(), "wall": time.perf_counter() - started,
                  "whole_file_lines": sum(f.whole_file_lines for f in summary.files),
                  "fast_lines": sum(f.fast_lines for f in summary.files),
                  "exact_lines": sum(f.exact_lines for f in summary.files)}))
"""


def seed_file() -> Path:
    seed_dir = DATA / "loader-seed"
    if not seed_dir.exists():
        from engage.generate import generate

        generate(events=1_000_000, days=365, seed=42, out=seed_dir, files=1, progress=True)
    return next(seed_dir.glob("*.ndjson"))


def build_file(gigabytes: float) -> Path:
    target = DATA / f"loader-{gigabytes:g}GB.ndjson"
    if target.exists():
        return target
    DATA.mkdir(parents=True, exist_ok=True)
    seed = seed_file().read_bytes()
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        while out.tell() < gigabytes * 1e9:
            out.write(seed)
    tmp.rename(target)
    return target


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load_once(source: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix="engage-loader-bench-"))
    try:
        (home / "landing").mkdir(parents=True)
        os.link(source, home / "landing" / source.name)
        env = {**os.environ, "ENGAGE_HOME": str(home)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        cpu0, busy0, wall0 = _children_cpu(), machine_busy_seconds(), time.perf_counter()
        out = subprocess.run([sys.executable, "-c", LOAD_ONE], env=env, capture_output=True, text=True, check=True)
        cpu, busy, wall = _children_cpu() - cpu0, machine_busy_seconds() - busy0, time.perf_counter() - wall0
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["cpu"] = cpu
        result["other_cores"] = max(0.0, busy - cpu) / wall  # what the rest of the machine used meanwhile
        # ru_maxrss of children is the max over all children so far: valid when this run is the largest.
        result["peak_rss_mb"] = max(peak_kb, before) / 1024
        return result
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def breakdown(seed: Path) -> tuple[int, list[tuple[str, float]]]:
    """CPU seconds of each stage of a load of `seed`, measured alone, in this process (threads as
    the loader has them): the hash and screen pass, the whole-file path (DuckDB's reader, the
    validation SQL, the insert), commit; and for comparison the fast path that files with bad rows
    take (read + split into Arrow lines, validation + insert per group)."""
    import duckdb

    from engage.landing import read_json_lines, scan_file
    from engage.loader import FileResult, _FileRows, _load_whole_file
    from engage.schema import DDL
    from engage.validate import Dialect

    stages = []

    def timed(label: str, work) -> object:
        started = _cpu()
        out = work()
        stages.append((label, _cpu() - started))
        return out

    scan = timed("sha256 + line screen of the file (one pass, exactly-once ledger)", lambda: scan_file(seed, screen=True))
    folder = Path(tempfile.mkdtemp(prefix="engage-loader-breakdown-"))
    try:
        con = duckdb.connect(str(folder / "w.duckdb"))
        con.execute("SET enable_progress_bar = false")
        con.execute(DDL)
        con.execute("BEGIN TRANSACTION")
        result = FileResult("seed", "", "loaded", batch_id=1)
        timed("whole-file path: DuckDB's NDJSON reader + validation SQL + insert",
              lambda: _load_whole_file(con, seed, result, scan.whole_ndjson_lines))
        timed("commit", lambda: con.execute("COMMIT"))
        rows = result.rows_loaded
        timed("  (fast path instead: read, split into Arrow lines, UTF-8 check)",
              lambda: sum(1 for _ in read_json_lines(seed, False)))
        groups = list(read_json_lines(seed, False))  # (held for the next stage: not timed)
        con.execute("BEGIN TRANSACTION")
        rows_of = _FileRows(con, "seed", 2, Dialect.JSON, FileResult("seed", "", "loaded", batch_id=2))
        timed("  (fast path instead: validation SQL + insert per group)", lambda: [rows_of.fast(g) for g in groups])
        con.execute("COMMIT")
        con.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows, [(label, seconds / rows * 1e6) for label, seconds in stages]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=120,
                        help="seconds in all to wait for other processes to use < 0.5 core before runs")
    args = parser.parse_args()
    source = build_file(args.gigabytes)
    size = source.stat().st_size
    runs = []
    quiet = QuietWaiter(budget=args.quiet_wait, threshold=0.5)
    for i in range(args.repeat):
        quiet.wait()
        r = load_once(source)
        runs.append(r)
        rows = r["rows_loaded"] + r["rows_quarantined"]
        print(f"run {i + 1}: {rows:,} rows in {r['wall']:.1f} s = {rows / r['wall']:,.0f} rows/s, CPU {r['cpu']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, other processes {r['other_cores']:.2f} cores, "
              f"whole-file/fast/exact lines {r['whole_file_lines']:,}/{r['fast_lines']:,}/{r['exact_lines']:,}")
    rows = runs[0]["rows_loaded"] + runs[0]["rows_quarantined"]
    wall = statistics.median(r["wall"] for r in runs)
    table = md_table(
        ["run", "time", "rows/s", "MB/s", "CPU s", "CPU s per 1M rows", "cores used by the load",
         "cores used by other processes", "peak RSS"],
        [[i + 1, f"{r['wall']:.1f} s", f"{rows / r['wall']:,.0f}", f"{size / 1e6 / r['wall']:,.0f}", f"{r['cpu']:.1f}",
          f"{r['cpu'] / rows * 1e6:.2f}", f"{r['cpu'] / r['wall']:.2f}", f"{r['other_cores']:.2f}",
          f"{r['peak_rss_mb']:,.0f} MB"] for i, r in enumerate(runs)],
    )
    summary = (f"{size / 1e9:.2f} GB NDJSON, {rows:,} rows, {len(runs)} runs: median {wall:.1f} s = "
               f"**{rows / wall:,.0f} rows/s**, best {max(rows / r['wall'] for r in runs):,.0f} rows/s, "
               f"peak RSS at most **{max(r['peak_rss_mb'] for r in runs):,.0f} MB**.")
    seed_rows, stages = breakdown(seed_file())
    total = sum(s for label, s in stages if not label.startswith(" "))
    ceiling = CORES / total * 1e6
    fast = sum(s for label, s in stages if label.startswith(" "))
    stage_table = md_table(["stage (CPU seconds per 1M rows, measured alone)", "CPU s"],
                           [[label, f"{s:.2f}"] for label, s in stages] + [["**total** (whole-file path)", f"**{total:.2f}**"]])
    body = (
        machine_line(machine_info()) + "\n\n" + summary + "\n\n" + table + "\n\n"
        f"Paths: {runs[0]['whole_file_lines']:,} lines on the whole-file path, {runs[0]['fast_lines']:,} on the fast "
        f"path, {runs[0]['exact_lines']:,} on the exact one.\n\n"
        f"Where the CPU time goes (the {seed_rows:,}-row seed file the big file repeats; this process):\n\n"
        + stage_table + "\n\n"
        f"Ceiling on {CORES} cores, all busy with nothing else: {CORES} / {total:.2f} µs per row = "
        f"**{ceiling:,.0f} rows/s** (goal {GOAL_ROWS_PER_SECOND:,}; at most {CORES / GOAL_ROWS_PER_SECOND * 1e6:.2f} "
        f"CPU s per 1M rows). A file with bad rows takes the fast path, {fast:.2f} CPU s per 1M rows plus the "
        "hash, after the whole-file attempt is rolled back."
    )
    write_doc_section("loader", body)
    print(body)


if __name__ == "__main__":
    main()
