"""Liveness and readiness (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from engage.snapshots import PUBLISHED_MARTS
from serving.deps import get_snapshots
from serving.errors import ApiError
from serving.formats import json_bytes
from serving.snapshots import SnapshotManager, SnapshotUnavailable

router = APIRouter(tags=["health"])


def _json(body: dict, status: int = 200) -> Response:
    return Response(json_bytes(body), status_code=status, media_type="application/json")


@router.api_route("/health", methods=["GET", "HEAD"], summary="Liveness: the process answers.")
async def health() -> Response:
    return _json({"status": "ok"})


@router.api_route("/ready", methods=["GET", "HEAD"], summary="Readiness: a published snapshot is open and answers a query.")
def ready(request: Request, snapshots: SnapshotManager = Depends(get_snapshots)) -> Response:
    try:
        with snapshots.acquire() as snap:
            request.state.snapshot = snap
            snap.cursor.execute("SELECT count(*) FROM snapshot_info").fetchone()
            present = {r[0] for r in snap.cursor.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
    except SnapshotUnavailable as exc:
        raise ApiError(503, f"Not ready: {exc}.") from None
    except Exception as exc:  # the snapshot file is unreadable
        raise ApiError(503, f"Not ready: the published snapshot cannot be queried ({type(exc).__name__}).") from None
    missing = [m for m in PUBLISHED_MARTS if m not in present]
    if missing:
        raise ApiError(503, f"Not ready: snapshot {snap.snapshot_id} lacks the marts {', '.join(missing)}.")
    return _json({
        "status": "ready",
        "snapshot_id": snap.snapshot_id,
        "watermark": snap.watermark_text or None,
        "published_at": snap.published_at.replace(microsecond=0).isoformat(" ") if snap.published_at else None,
    })
