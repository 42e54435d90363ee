"""`make bench`: the pipe benchmark (bench/pipes.py), which writes docs/PERFORMANCE.md.

    make bench                                   # 10,000,000 events (10-30 minutes on 2 cores, the first time more: it generates the data)
    make bench BENCH_ARGS="--events 1000000"     # a quicker run
"""

from __future__ import annotations

import sys

from bench.pipes import main

if __name__ == "__main__":
    sys.exit(main())
