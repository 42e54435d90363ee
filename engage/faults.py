"""Named fault points for crash tests: ``ENGAGE_FAULT=<point>`` makes the process die there at once.

``os._exit`` skips every cleanup, like ``kill -9``: what is on disk is what a real crash leaves.
"""

from __future__ import annotations

import os

FAULT_ENV = "ENGAGE_FAULT"
POINTS = ("load_before_commit", "dbt_before_build", "publish_before_swap")


def point(name: str) -> None:
    assert name in POINTS, name
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)
