"""Headers on every response: ``X-Request-ID`` (the client's own if it is a sane short token, else a
new uuid4), ``X-Engage-Snapshot`` and ``X-Engage-Watermark`` (the snapshot that answered; for
responses that read none, e.g. errors, the current one when there is one)."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.snapshots import Snapshot, SnapshotManager

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", re.ASCII)


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
    def __init__(self, app: ASGIApp, snapshots: SnapshotManager):
        self.app = app
        self.snapshots = snapshots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                snap: Snapshot | None = state.get("snapshot")
                current = (snap.snapshot_id, snap.watermark_text) if snap is not None else self.snapshots.peek()
                if current is not None:
                    headers["X-Engage-Snapshot"] = current[0]
                    headers["X-Engage-Watermark"] = current[1]
            await send(message)

        await self.app(scope, receive, send_with_headers)
