"""The Events API: ``POST /v0/events?name=user_events[&wait=true]`` (Tinybird-compatible)."""

from __future__ import annotations

import zlib

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from engage.events import accept_events
from engage.schema import DATASOURCE
from serving.auth import APPEND_USER_EVENTS, authorize
from serving.errors import ApiError
from serving.formats import json_bytes

router = APIRouter(tags=["events"])

# A gzip body may expand to at most this many times the body limit (a gzip bomb gets 413). The
# limit is on the events themselves: a 10 MiB body of tiny lines is already millions of rows to
# validate, so a 100 KB bomb must not become ten times that.
MAX_GZIP_EXPANSION = 1


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past `limit` bytes, as sent and once gunzipped."""
    too_large = ApiError(413, f"Request body too large: send at most {limit} bytes per request "
                              "(split the events into several requests).")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise ApiError(400, f"Unsupported Content-Encoding {encoding[:60]!r}: send the body as is or gzip-compressed.")
    max_size = limit * MAX_GZIP_EXPANSION
    parts, size = [], 0
    while True:  # one inflater per gzip member: a body may be several members one after the other
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, max_size + 1 - size)
        except zlib.error as exc:
            raise ApiError(400, f"Body is not valid gzip ({exc}): compress it with gzip or drop Content-Encoding.") from None
        size += len(data)
        if size > max_size or inflater.unconsumed_tail:
            raise ApiError(413, f"Decompressed body too large: at most {max_size} bytes once gunzipped.")
        if not inflater.eof:
            raise ApiError(400, "Body is truncated gzip: send the whole compressed stream.")
        parts.append(data)
        body = inflater.unused_data
        if not body:
            return b"".join(parts)


def _wait_flag(value: str | None) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, f"Invalid wait={value[:60]!r}: use wait=true or wait=false.")


@router.post(
    "/v0/events",
    summary="Append NDJSON events to a data source.",
    description="Body: NDJSON (optionally `Content-Encoding: gzip`), at most 10 MiB. Valid rows are "
    "persisted as an immutable batch file and appear in the pipes after the next pipeline run; invalid "
    "rows are quarantined with their line number and reason. 202 by default; 200 once durable with wait=true.",
    responses={200: {"description": "Durably accepted (wait=true)."}, 202: {"description": "Accepted."}},
)
async def post_events(
    request: Request,
    name: str | None = Query(None, description="The data source: user_events."),
    wait: str | None = Query(None, description="true: answer 200 only once the batch is durably on disk."),
) -> Response:
    settings = request.app.state.settings
    # The token first: only a caller allowed to append learns which data sources exist.
    authorize(request, (APPEND_USER_EVENTS,))
    if not name:
        raise ApiError(400, f"Missing parameter name: use /v0/events?name={DATASOURCE}.")
    if name != DATASOURCE:
        raise ApiError(404, f"Unknown data source {name[:60]!r}: the only data source is {DATASOURCE}.")
    durable = _wait_flag(wait)
    # The cap covers the body too: it bounds the memory of bodies being read and validated at once.
    async with request.app.state.limits.event_requests:
        body = await read_body(request, settings.max_event_body_bytes)
        request_id = getattr(request.state, "request_id", "") or ""
        result = await run_in_threadpool(accept_events, settings, body, request_id, durable)
    payload = {"successful_rows": result.successful_rows, "quarantined_rows": result.quarantined_rows}
    return Response(json_bytes(payload), status_code=200 if durable else 202, media_type="application/json")

