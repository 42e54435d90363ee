"""Headers on every response (docs/API.md, "Headers" and "Security"):

* ``X-Request-ID`` (the client's own if it is a sane short token, else a new uuid4),
  ``X-Engage-Snapshot`` and ``X-Engage-Watermark`` (the snapshot that answered; for responses that
  read none, e.g. errors, the current one when there is one);
* ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` when the request was counted by a rate limit;
* the security headers: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store`` (unless the route chose one) and a
  ``Content-Security-Policy`` that lets an API response load nothing; the interactive docs pages
  (``/docs``, ``/redoc``) get one that allows what those pages load.

Also :class:`JsonErrorCORS`: Starlette's CORS middleware whose refused preflights are JSON errors.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.formats import json_bytes
from serving.snapshots import Snapshot, SnapshotManager

if TYPE_CHECKING:
    from serving.limits import Verdict

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", re.ASCII)

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's Swagger UI and ReDoc pages: their scripts and styles come from cdn.jsdelivr.net with an
# inline bootstrap script; ReDoc adds Google fonts and a blob: worker; both fetch /openapi.json.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
            "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = (b"cache-control", b"no-store")


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


API_SECURITY_RAW = _raw({**SECURITY_HEADERS, "Content-Security-Policy": API_CSP})
DOCS_SECURITY_RAW = _raw({**SECURITY_HEADERS, "Content-Security-Policy": DOCS_CSP})


def security_headers(docs_page: bool = False) -> dict[str, str]:
    """The security headers as a dict (for responses built outside the middleware: 500s)."""
    return {**SECURITY_HEADERS, "Content-Security-Policy": DOCS_CSP if docs_page else API_CSP,
            "Cache-Control": "no-store"}


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if REQUEST_ID_RE.fullmatch(text):
                return text
            break
    return str(uuid.uuid4())


class EngageHeaders:
    def __init__(self, app: ASGIApp, snapshots: SnapshotManager, docs_paths: frozenset[str] = frozenset()):
        self.app = app
        self.snapshots = snapshots
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        security = DOCS_SECURITY_RAW if scope["path"] in self.docs_paths else API_SECURITY_RAW

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                snap: Snapshot | None = state.get("snapshot")
                current = (snap.snapshot_id, snap.watermark_text) if snap is not None else self.snapshots.peek()
                if current is not None:
                    headers["X-Engage-Snapshot"] = current[0]
                    headers["X-Engage-Watermark"] = current[1]
                raw = headers.raw
                verdict: Verdict | None = state.get("rate_limit")
                if verdict is not None:
                    raw.extend(verdict.headers())
                raw.extend(security)
                if not any(k == b"cache-control" for k, _ in raw):
                    raw.append(NO_STORE)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class JsonErrorCORS(CORSMiddleware):
    """CORS for the origins of ENGAGE_CORS_ORIGINS; a refused preflight is a JSON 400 naming why."""

    def __init__(self, app: ASGIApp, documentation_url: str, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.documentation_url = documentation_url

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode("latin-1").removeprefix("Disallowed CORS ")
        origin = request_headers.get("origin", "")[:100]
        body = {"error": f"CORS preflight refused ({refused}) for origin {origin!r}: the API allows the origins "
                         f"of ENGAGE_CORS_ORIGINS, the methods GET and POST and the headers "
                         f"{', '.join(self.allow_headers)}.",
                "documentation": self.documentation_url}
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return Response(json_bytes(body), status_code=400, media_type="application/json", headers=headers)
