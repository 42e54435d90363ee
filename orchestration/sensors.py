"""The landing sensor: new files in the landing folder launch a refresh run."""

from __future__ import annotations

import hashlib

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from engage.landing import REJECTED_DIR, LandingIndex, file_key, pending_rejected
from engage.settings import Settings
from orchestration.jobs import refresh_job


def pending_batch_key(settings: Settings) -> tuple[str | None, int]:
    """A key naming the current set of pending files (path, size, mtime), and how many there are."""
    index = LandingIndex(settings)
    pending = [(index.relative(p), p) for p in index.pending()]
    pending += [(f"{REJECTED_DIR}/{p.name}", p) for p in pending_rejected(settings)]
    if not pending:
        return None, 0
    digest = hashlib.sha256()
    for name, path in pending:
        try:
            digest.update(f"{name}\0{file_key(path)}\n".encode())
        except FileNotFoundError:
            continue  # consumed by a running load meanwhile
    return digest.hexdigest()[:32], len(pending)


@sensor(
    job=refresh_job,
    minimum_interval_seconds=Settings().sensor_interval_seconds,
    default_status=DefaultSensorStatus.RUNNING,
    description="Launches refresh_job when new files are ready in the landing folder.",
)
def landing_sensor(context: SensorEvaluationContext):
    key, count = pending_batch_key(Settings())
    if key is None:
        return SkipReason("no new landing files")
    if context.cursor == key:
        return SkipReason(f"a run was already requested for these {count} files")
    context.update_cursor(key)
    return RunRequest(run_key=f"landing-{key}", tags={"engage/pending_files": str(count)})
