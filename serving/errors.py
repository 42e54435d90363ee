"""Errors: every failure leaves as ``{"error": "<what is wrong and how to fix it>", "documentation": "<url>"}``.

One handler (:func:`handle_error`) serves all exceptions: :class:`ApiError` raised by our code,
Starlette/FastAPI ``HTTPException`` (routing 404/405), ``RequestValidationError`` and, as a
catch-all, any other exception, which is logged (without the query string) and answered with a
generic 500 that leaks no internals. A 429 always carries ``Retry-After``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.formats import json_bytes
from serving.middleware import security_headers

log = logging.getLogger("engage.serving")

DEFAULT_MESSAGES = {
    400: "Bad request.",
    403: "Forbidden.",
    404: "Not found: the API serves /v0/pipes/<pipe>.<json|csv|ndjson|parquet>, /health and /ready.",
    405: "Method not allowed.",
    413: "Request body too large.",
    429: "Too many requests: retry after the Retry-After seconds.",
    500: "Internal error: the request could not be answered. It has been logged; retry or report it with its X-Request-ID.",
    503: "Service unavailable.",
}


class ApiError(StarletteHTTPException):
    """An error answered as JSON with ``status_code`` and ``message`` (and optional headers)."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status_code, detail=message, headers=headers)


def documentation_url(request: Request | None) -> str:
    try:
        return request.app.state.settings.documentation_url  # type: ignore[union-attr]
    except AttributeError:
        return "docs/API.md"


def error_response(request: Request | None, status_code: int, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": message, "documentation": documentation_url(request)}
    hdrs = dict(headers or {})
    rid = getattr(getattr(request, "state", None), "request_id", None) if request is not None else None
    if rid:
        hdrs.setdefault("X-Request-ID", rid)
    return Response(json_bytes(body), status_code=status_code, media_type="application/json", headers=hdrs)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts) if parts else DEFAULT_MESSAGES[400]


async def handle_error(request: Request, exc: Exception) -> Response:
    """The single error handler (registered for HTTPException, RequestValidationError and Exception)."""
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        detail = exc.detail
        if not isinstance(exc, ApiError) or not isinstance(detail, str) or not detail:
            detail = DEFAULT_MESSAGES.get(status, detail if isinstance(detail, str) else "Error.")
            if status == 405:
                allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
                if allow:
                    detail = f"Method {request.method} not allowed here: use {allow}."
        headers = exc.headers
        if status == 429 and not any(k.lower() == "retry-after" for k in headers or {}):
            headers = {**(headers or {}), "Retry-After": "1"}
        return error_response(request, status, detail, headers)
    if isinstance(exc, RequestValidationError):
        return error_response(request, 400, _validation_message(exc))
    log.exception(
        "unhandled error answering %s %s (request %s)",
        request.method, request.url.path, getattr(request.state, "request_id", "-"),
    )
    # Answered outside the middlewares (by Starlette's ServerErrorMiddleware): add their headers here.
    return error_response(request, 500, DEFAULT_MESSAGES[500], security_headers())


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in (StarletteHTTPException, RequestValidationError, Exception):
        app.add_exception_handler(exc_type, handle_error)
