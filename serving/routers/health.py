"""Liveness and readiness (no token needed).

``/ready`` is 503 only when no snapshot can be served. When one is served but something is wrong
(CURRENT names a missing or damaged snapshot, the served file vanished, the last refresh failed or
died), it is 200 with ``"status": "degraded"`` and the ``problems`` in words: every instance reads
the same ENGAGE_HOME, so a load balancer that dropped degraded instances would turn stale data into
an outage. Monitoring alerts on ``status`` (docs/RELIABILITY.md, "Faults").
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from engage import refresh_status
from engage.settings import Settings
from serving.deps import get_settings, get_snapshots
from serving.errors import ApiError
from serving.formats import json_bytes
from serving.snapshots import SnapshotManager, SnapshotUnavailable

router = APIRouter(tags=["health"])


def _json(body: dict, status: int = 200) -> Response:
    return Response(json_bytes(body), status_code=status, media_type="application/json")


@router.api_route("/health", methods=["GET", "HEAD"], summary="Liveness: the process answers.")
async def health() -> Response:
    return _json({"status": "ok"})


@router.api_route("/ready", methods=["GET", "HEAD"],
                  summary="Readiness: a published snapshot is open and answers a query; `problems` lists what is wrong.")
def ready(request: Request, snapshots: SnapshotManager = Depends(get_snapshots),
          settings: Settings = Depends(get_settings)) -> Response:
    problems = snapshots.problems()
    refresh_problem = refresh_status.problem(settings)
    if refresh_problem:
        problems.append(refresh_problem)
    try:
        with snapshots.acquire() as snap:
            request.state.snapshot = snap
            snap.cursor.execute("SELECT count(*) FROM snapshot_info").fetchone()
    except SnapshotUnavailable as exc:
        reasons = dict.fromkeys([str(exc), *problems])  # the snapshot problem is often the reason itself
        raise ApiError(503, f"Not ready: {'; '.join(reasons)}.") from None
    except Exception as exc:  # the open snapshot became unreadable
        raise ApiError(503, f"Not ready: the published snapshot cannot be queried ({type(exc).__name__}).") from None
    return _json({
        "status": "degraded" if problems else "ready",
        "snapshot_id": snap.snapshot_id,
        "watermark": snap.watermark_text or None,
        "published_at": snap.published_at.replace(microsecond=0).isoformat(" ") if snap.published_at else None,
        "problems": problems,
    })
