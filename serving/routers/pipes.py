"""``GET /v0/pipes/<pipe>.<format>``: one route per declared pipe (serving/pipes.py), plus
``GET /v0/pipes/openapi.json`` and a catch-all answering 404 (unknown pipe or format) / 405."""

from __future__ import annotations

import time
from typing import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from serving.auth import pipe_scopes
from serving.cache import bypass, cache_key
from serving.deps import get_snapshots, require_scopes
from serving.errors import ApiError
from serving.formats import FORMATS, RENDERERS
from serving.openapi import pipe_operation_extra, pipe_path, pipe_responses, pipes_openapi
from serving.pipes import PIPES, Pipe
from serving.snapshots import SnapshotManager, SnapshotUnavailable

router = APIRouter(tags=["pipes"])
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FORMAT_LIST = ", ".join(f".{f}" for f in FORMATS)


def _unknown_format(pipe: str, fmt: str) -> ApiError:
    return ApiError(404, f"Unknown format {fmt[:20]!r} for pipe {pipe}: use /v0/pipes/{pipe}.<format> "
                         f"with one of {FORMAT_LIST}.")


def _unknown_pipe(name: str) -> ApiError:
    return ApiError(404, f"Unknown pipe {name[:60]!r}: the pipes are {', '.join(PIPES)}, "
                         f"served at /v0/pipes/<pipe>.<format> ({FORMAT_LIST}).")


def _check_format(pipe: Pipe) -> Callable:
    async def check_format(request: Request) -> str:
        fmt = request.path_params["format"]
        if fmt not in FORMATS:
            raise _unknown_format(pipe.name, fmt)
        return fmt

    return check_format


def _endpoint(pipe: Pipe) -> Callable:
    def answer(request: Request, snapshots: SnapshotManager) -> Response:
        started = time.perf_counter()
        fmt = request.path_params["format"]
        query: dict[str, list[str]] = {}
        for k, v in request.query_params.multi_items():
            query.setdefault(k, []).append(v)
        q = pipe.parse(query)
        cache = request.app.state.result_cache
        try:
            with snapshots.acquire() as snap:  # ONE cursor: the whole answer comes from one snapshot
                request.state.snapshot = snap
                key = cache_key(snap.snapshot_id, pipe, q)  # a snapshot is immutable: caching is exact
                result = None if bypass(request.headers.get("cache-control")) else cache.get(key)
                if result is None:
                    result = pipe.run(snap.cursor, q)
                    cache.put(key, result)
        except SnapshotUnavailable as exc:
            raise ApiError(503, f"No data to serve yet: {exc}.", headers={"Retry-After": "5"}) from None
        result.statistics = {
            "elapsed": round(time.perf_counter() - started, 6),
            "rows_read": result.rows_read,
            "bytes_read": result.bytes_read,
        }
        return Response(RENDERERS[fmt](result), media_type=FORMATS[fmt])

    async def endpoint(request: Request, snapshots: SnapshotManager = Depends(get_snapshots)) -> Response:
        # Admitted on the event loop, before taking a worker thread: over the cap is a quick 429.
        async with request.app.state.limits.queries:
            return await run_in_threadpool(answer, request, snapshots)

    endpoint.__name__ = f"pipe_{pipe.name}"
    return endpoint


@router.get("/v0/pipes/openapi.json", summary="OpenAPI document of the pipes (every pipe and parameter).")
async def openapi_json(request: Request) -> Response:
    from serving.formats import json_bytes

    return Response(json_bytes(pipes_openapi(request.app)), media_type="application/json")


for _pipe in PIPES.values():
    router.add_api_route(
        pipe_path(_pipe),
        _endpoint(_pipe),
        methods=["GET"],
        name=_pipe.name,
        summary=_pipe.name,
        description=_pipe.description,
        dependencies=[Depends(_check_format(_pipe)), Depends(require_scopes(*pipe_scopes(_pipe.name)))],
        responses=pipe_responses(_pipe),
        openapi_extra=pipe_operation_extra(_pipe),
        response_class=Response,
    )


@router.api_route("/v0/pipes/{rest:path}", methods=ALL_METHODS, include_in_schema=False)
async def unknown_pipe(request: Request, rest: str) -> Response:
    name, dot, fmt = rest.rpartition(".")
    if not dot:
        name, fmt = rest, ""
    if rest == "openapi.json" or name in PIPES:
        if rest == "openapi.json" or fmt in FORMATS:  # a known path: only the method is wrong
            raise ApiError(405, f"Method {request.method} not allowed on /v0/pipes/{rest}: use GET.",
                           headers={"Allow": "GET"})
        raise _unknown_format(name, fmt)
    raise _unknown_pipe(rest)
