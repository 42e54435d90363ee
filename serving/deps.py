"""FastAPI dependencies: settings, the snapshot manager, authorization."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from fastapi import Request

from engage.settings import Settings
from serving.auth import Principal, authorize
from serving.snapshots import SnapshotManager


@lru_cache(maxsize=1)
def default_settings() -> Settings:
    """Settings from the environment (``ENGAGE_*``), read once per process."""
    return Settings()


async def get_settings(request: Request) -> Settings:
    """The app's settings (those given to ``create_app``, else :func:`default_settings`)."""
    return request.app.state.settings


async def get_snapshots(request: Request) -> SnapshotManager:
    return request.app.state.snapshots


def require_scopes(*scopes: str) -> Callable[[Request], Principal]:
    """A dependency admitting a token holding any of ``scopes`` (else 403)."""

    async def dependency(request: Request) -> Principal:  # async: no threadpool hop for a dict lookup
        return authorize(request, scopes)

    return dependency
