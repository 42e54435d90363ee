"""Every setting of engage, declared once (pydantic-settings, ``ENGAGE_*`` environment variables)."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENGAGE_", extra="ignore")

    home: Path = Field(Path(".engage"), description="Folder holding all state.")
    landing_dir: Path | None = Field(None, description="Landing folder; default $ENGAGE_HOME/landing.")
    admin_token: str | None = Field(None, description="Admin token; generated on first start if unset.")
    tokens_file: Path | None = Field(None, description="TOML file of scoped tokens.")
    snapshots_keep: int = Field(3, ge=1, description="Published snapshots kept on disk.")
    sensor_interval_seconds: int = Field(
        2, ge=1, description="Least seconds between two looks of the landing sensor; Dagster's sensor daemon "
        "wakes every 5 s, so any value below 5 means at each wake-up (5 skips some wake-ups).")
    max_event_body_bytes: int = Field(10 * 1024 * 1024, description="Largest /v0/events body (413 beyond).")
    pipeline_memory_limit: str = Field(
        "2GB", description="DuckDB memory limit of the loader, the dbt build and the publisher (they spill beyond "
        "it). At 10 M events: peak RSS 2.2 GB, rebuild 52 s; 3GB: 2.9 GB, 49 s (docs/PERFORMANCE.md).")
    documentation_url: str = Field("docs/API.md", description="Where error responses point.")
    # Limits and security of the HTTP API (docs/API.md, "Limits" and "Security").
    rate_limit_per_second: float = Field(5000, ge=0, description="Requests/s per token, sustained (0 = no limit).")
    rate_limit_burst: int | None = Field(None, ge=1, description="Requests per token at once; default 2 s worth.")
    rate_limit_anonymous_per_second: float = Field(
        100, ge=0, description="Requests/s per client address without a valid token (0 = no limit).")
    rate_limit_anonymous_burst: int | None = Field(None, ge=1, description="Burst of the above; default 2 s worth.")
    max_concurrent_queries: int = Field(16, ge=0, description="Pipe queries in flight at once (0 = no cap).")
    max_concurrent_event_requests: int = Field(8, ge=0, description="/v0/events requests in flight (0 = no cap).")
    concurrency_wait_ms: int = Field(100, ge=0, description="How long a request over a cap waits for a slot (429 after).")
    cors_origins: str = Field("", description="Origins allowed by CORS: comma-separated, or `*`; empty = CORS off.")

    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def landing(self) -> Path:
        return (self.landing_dir or self.home_dir / "landing").resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.home_dir / "warehouse.duckdb"

    @property
    def marts_path(self) -> Path:
        """The dbt marts (attached to the warehouse as `marts`); publishing renames it into a snapshot."""
        return self.home_dir / "marts.duckdb"

    @property
    def snapshots_dir(self) -> Path:
        return self.home_dir / "snapshots"

    @property
    def state_dir(self) -> Path:
        return self.home_dir / "state"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster"

    @property
    def refresh_lock_path(self) -> Path:
        return self.state_dir / "refresh.lock"

    @property
    def admin_token_path(self) -> Path:
        return self.home_dir / "admin_token"

    def ensure_dirs(self) -> None:
        for d in (self.home_dir, self.landing, self.snapshots_dir, self.state_dir, self.dagster_home):
            d.mkdir(parents=True, exist_ok=True)

    def resolved_admin_token(self) -> str:
        """The admin token: from the environment, else the stored one, else a new one (owner-only file)."""
        if self.admin_token:
            return self.admin_token
        path = self.admin_token_path
        if path.exists():
            return path.read_text().strip()
        self.home_dir.mkdir(parents=True, exist_ok=True)
        token = "p." + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token


def get_settings() -> Settings:
    return Settings()
