"""Shared fixtures: real ENGAGE_HOMEs, real loads, real dbt builds, real Dagster job runs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (edge_data, reference)

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("ENGAGE_ADMIN_TOKEN", "test-admin-token")

from edge_data import FIELDS, edge_case_events, split_into_files, write_ndjson  # noqa: E402

from engage.settings import Settings  # noqa: E402

ADMIN_TOKEN = os.environ["ENGAGE_ADMIN_TOKEN"]


def use_home(home: Path) -> Settings:
    """Point every engage component of this process at `home` (ENGAGE_HOME) and return its settings."""
    os.environ["ENGAGE_HOME"] = str(home)
    os.environ.pop("ENGAGE_LANDING_DIR", None)
    settings = Settings()
    settings.ensure_dirs()
    os.environ["ENGAGE_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    os.environ["ENGAGE_MARTS_PATH"] = str(settings.marts_path)
    return settings


@pytest.fixture
def engage_home(tmp_path, monkeypatch) -> Settings:
    """A fresh, empty ENGAGE_HOME for one test."""
    monkeypatch.setenv("ENGAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENGAGE_WAREHOUSE_PATH", str(tmp_path / "home" / "warehouse.duckdb"))
    monkeypatch.setenv("ENGAGE_MARTS_PATH", str(tmp_path / "home" / "marts.duckdb"))
    monkeypatch.delenv("ENGAGE_LANDING_DIR", raising=False)
    settings = Settings()
    settings.ensure_dirs()
    return settings


def oracle_table(con: duckdb.DuckDBPyConnection, events: list[dict], table: str = "user_events") -> None:
    """The reference copy of the events, built straight from the generated dicts (not by our loader)."""
    columns = {f: [e[f] for e in events] for f in FIELDS}
    con.register("_events", pa.table(columns))
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT CAST(timestamp AS TIMESTAMP) AS timestamp, user_id, event_type, "
        "session_id, CAST(duration AS UINTEGER) AS duration, device, platform, page, country, region, city FROM _events"
    )
    con.unregister("_events")


@dataclass
class PublishedHome:
    settings: Settings
    events: list[dict]
    oracle: duckdb.DuckDBPyConnection  # table user_events = exactly the valid events written


@pytest.fixture(scope="session")
def published_home(tmp_path_factory) -> PublishedHome:
    """An ENGAGE_HOME whose edge-case events were loaded in two refresh runs of the real Dagster job
    (the second one bringing late events), with a published snapshot."""
    from engage.cli import run_refresh

    previous = os.environ.get("ENGAGE_HOME")
    settings = use_home(tmp_path_factory.mktemp("published") / "home")
    events = edge_case_events(seed=7, n_events=4000)
    files = split_into_files(events, seed=7, n_files=4)
    for i, chunk in enumerate(files[:2]):
        write_ndjson(settings.landing / f"part-{i}.ndjson", chunk)
    assert run_refresh(settings).success
    for i, chunk in enumerate(files[2:], start=2):
        write_ndjson(settings.landing / "late" / f"part-{i}.ndjson", chunk)
    assert run_refresh(settings).success
    oracle = duckdb.connect()
    oracle_table(oracle, events)
    yield PublishedHome(settings, events, oracle)
    oracle.close()
    if previous is None:
        os.environ.pop("ENGAGE_HOME", None)
    else:
        os.environ["ENGAGE_HOME"] = previous
