"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

import engage
from engage.settings import Settings
from serving.auth import TokenStore, owner_only
from serving.cache import ResultCache
from serving.deps import default_settings
from serving.errors import install_error_handlers
from serving.limits import ApiLimits
from serving.logs import install_redaction
from serving.middleware import EngageHeaders, JsonErrorCORS
from serving.openapi import app_openapi
from serving.routers import events, health, pipes
from serving.snapshots import SnapshotManager

# Routers, one per area.
ROUTERS = (health.router, pipes.router, events.router)
# Headers a browser may send cross-origin, and those its scripts may read (when CORS is on).
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "Cache-Control", "X-Request-ID")
CORS_EXPOSED_HEADERS = ("X-Request-ID", "X-Engage-Snapshot", "X-Engage-Watermark", "X-RateLimit-Limit",
                        "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
# Worker threads kept free beyond the capped requests (for /ready and other synchronous routes).
SPARE_WORKER_THREADS = 8


def cors_origins(settings: Settings) -> list[str]:
    """ENGAGE_CORS_ORIGINS as a list (empty: CORS off)."""
    return [o.strip() for o in settings.cors_origins.split(",") if o.strip()]

DESCRIPTION = """Exact user-engagement analytics with a Tinybird-compatible API.

Pipes: `GET /v0/pipes/<pipe>.<json|csv|ndjson|parquet>` with a token (`Authorization: Bearer <token>`
or `?token=<token>`). See docs/API.md."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or default_settings()
    install_redaction()
    snapshots = SnapshotManager(settings)
    tokens = TokenStore(settings.resolved_admin_token(), settings.tokens_file)
    if settings.admin_token is None:
        owner_only(settings.admin_token_path, "admin token file", fix=True)
    limits = ApiLimits(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Admitted requests (within the caps) must never queue for a worker thread.
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, limits.worker_threads_needed + SPARE_WORKER_THREADS)
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
    app.state.limits = limits
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    origins = cors_origins(settings)
    if origins:  # inside EngageHeaders: preflight answers get the request id and security headers too
        app.add_middleware(JsonErrorCORS, documentation_url=settings.documentation_url, allow_origins=origins,
                           allow_methods=["GET", "POST"], allow_headers=CORS_REQUEST_HEADERS,
                           expose_headers=CORS_EXPOSED_HEADERS, allow_credentials=False)
    docs_paths = frozenset(p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p)
    app.add_middleware(EngageHeaders, snapshots=snapshots, docs_paths=docs_paths)
    app.openapi = lambda: app_openapi(app)  # type: ignore[method-assign]
    return app
