"""`make bench`: the pipe benchmark (bench/pipes.py), which writes docs/PERFORMANCE.md.

    make bench                                   # 10,000,000 events (about half an hour on 2 cores)
    make bench BENCH_ARGS="--events 1000000"     # a quicker run
"""

from __future__ import annotations

import sys

from bench.pipes import main

if __name__ == "__main__":
    sys.exit(main())
