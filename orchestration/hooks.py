"""Run hooks: a failed step of a refresh is recorded for /ready (engage/refresh_status.py)."""

from __future__ import annotations

from dagster import HookContext, failure_hook

from engage import faults, refresh_status
from orchestration.resources import EngageResource


@failure_hook(required_resource_keys={"engage"})
def record_refresh_failure(context: HookContext) -> None:
    exc = context.op_exception
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
    if exc is not None and faults.is_disk_full(exc) and not isinstance(exc, faults.DiskFull):
        reason = "out of disk space: " + reason
    engage: EngageResource = context.resources.engage
    refresh_status.record(engage.settings(), context.run_id, "failed", step=context.step_key, reason=reason[:2000])
