"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

import engage
from engage.settings import Settings
from serving.auth import TokenStore
from serving.cache import ResultCache
from serving.deps import default_settings
from serving.errors import install_error_handlers
from serving.logs import install_redaction
from serving.middleware import EngageHeaders
from serving.openapi import app_openapi
from serving.routers import events, health, pipes
from serving.snapshots import SnapshotManager

# Routers, one per area.
ROUTERS = (health.router, pipes.router, events.router)

DESCRIPTION = """Exact user-engagement analytics with a Tinybird-compatible API.

Pipes: `GET /v0/pipes/<pipe>.<json|csv|ndjson|parquet>` with a token (`Authorization: Bearer <token>`
or `?token=<token>`). See docs/API.md."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or default_settings()
    install_redaction()
    snapshots = SnapshotManager(settings)
    tokens = TokenStore(settings.resolved_admin_token(), settings.tokens_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        snapshots.close()

    app = FastAPI(
        title="engage",
        version=getattr(engage, "__version__", "0.1.0"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.snapshots = snapshots
    app.state.tokens = tokens
    app.state.result_cache = ResultCache()
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(EngageHeaders, snapshots=snapshots)
    app.openapi = lambda: app_openapi(app)  # type: ignore[method-assign]
    return app
