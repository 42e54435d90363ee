"""Loader benchmark: a large NDJSON file → raw tables. Rows/s and peak RSS of the loading process.

    .venv/bin/python -m bench.loader [--gigabytes 2.0] [--repeat 3]

Builds one NDJSON file of about the given size from generated events (cached in bench/data/),
then loads it `--repeat` times into fresh ENGAGE_HOMEs, each in its own process (`load_pending`),
and writes the medians to docs/LOADER.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
DOC = ROOT / "docs" / "LOADER.md"

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


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


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
    table = (
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.\n\n"
        "| file | rows | runs | median time | median rows/s | MB/s | peak RSS (max of runs) |\n|---|---|---|---|---|---|---|\n"
        f"| {size / 1e9:.2f} GB NDJSON | {rows:,} | {len(runs)} | {wall:.1f} s | {rows / wall:,.0f} | "
        f"{size / 1e6 / wall:,.0f} | {max(r['peak_rss_mb'] for r in runs):,.0f} MB |\n"
    )
    doc = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- loader-bench:start -->", "<!-- loader-bench:end -->"
    block = f"{start}\n{table}{end}"
    if start in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = (doc or "# Loader benchmark\n\n`.venv/bin/python -m bench.loader [--gigabytes 2] [--repeat 3]`\n\n") + block + "\n"
    DOC.write_text(doc)
    print(table)


if __name__ == "__main__":
    main()
