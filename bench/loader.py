"""Loader benchmark: a large NDJSON file → raw tables. Rows/s and peak RSS of the loading process.

    .venv/bin/python -m bench.loader [--gigabytes 2.0] [--repeat 3]

Builds one NDJSON file of about the given size from generated events (cached in bench/data/),
then loads it `--repeat` times into fresh ENGAGE_HOMEs, each in its own process (`load_pending`),
and writes the medians to its section of docs/INGESTION.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, machine_line, md_table, write_doc_section

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"

LOAD_ONE = """
import json, sys, time
from engage.settings import Settings
from engage.loader import load_pending
started = time.perf_counter()
summary = load_pending(Settings())
print(json.dumps({**summary.as_dict(), "wall": time.perf_counter() - started}))
"""


def build_file(gigabytes: float) -> Path:
    target = DATA / f"loader-{gigabytes:g}GB.ndjson"
    if target.exists():
        return target
    from engage.generate import generate

    DATA.mkdir(parents=True, exist_ok=True)
    seed_dir = DATA / "loader-seed"
    if not seed_dir.exists():
        generate(events=1_000_000, days=365, seed=42, out=seed_dir, files=1, progress=True)
    seed = next(seed_dir.glob("*.ndjson")).read_bytes()
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        while out.tell() < gigabytes * 1e9:
            out.write(seed)
    tmp.rename(target)
    return target


def load_once(source: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix="engage-loader-bench-"))
    try:
        (home / "landing").mkdir(parents=True)
        os.link(source, home / "landing" / source.name)
        env = {**os.environ, "ENGAGE_HOME": str(home)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run([sys.executable, "-c", LOAD_ONE], env=env, capture_output=True, text=True, check=True)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        import json

        result = json.loads(out.stdout.strip().splitlines()[-1])
        # ru_maxrss of children is the max over all children so far: valid when this run is the largest.
        result["peak_rss_mb"] = max(peak_kb, before) / 1024
        return result
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    source = build_file(args.gigabytes)
    size = source.stat().st_size
    runs = []
    for i in range(args.repeat):
        started = time.perf_counter()
        r = load_once(source)
        runs.append(r)
        print(f"run {i + 1}: {r['rows_loaded']} rows in {r['wall']:.1f} s = {r['rows_loaded'] / r['wall']:,.0f} rows/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB ({time.perf_counter() - started:.1f} s with process start)")
    rows = runs[0]["rows_loaded"] + runs[0]["rows_quarantined"]
    wall = statistics.median(r["wall"] for r in runs)
    table = machine_line(machine_info()) + "\n\n" + md_table(
        ["file", "rows", "runs", "median time", "median rows/s", "MB/s", "peak RSS (max of runs)"],
        [[f"{size / 1e9:.2f} GB NDJSON", f"{rows:,}", len(runs), f"{wall:.1f} s", f"{rows / wall:,.0f}",
          f"{size / 1e6 / wall:,.0f}", f"{max(r['peak_rss_mb'] for r in runs):,.0f} MB"]],
    )
    write_doc_section("loader", table)
    print(table)


if __name__ == "__main__":
    main()
