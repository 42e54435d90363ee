"""dbt marts built incrementally equal a full rebuild; the Dagster definitions, sensor and job work."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import duckdb
import pytest
from edge_data import edge_case_events, split_into_files, write_ndjson

from engage.loader import connect_warehouse, load_pending
from engage.settings import Settings
from engage.snapshots import PUBLISHED_MARTS, current_snapshot

# Every mart with user_key translated back to user_id (keys are assigned in load order, so an
# incremental build and a full rebuild may number users differently).
MART_DIMENSIONS = {
    "session_metrics": ["platform", "device", "country"],
    "user_engagement": ["user_id", "event_type", "platform", "device", "country"],
    "active_users": ["user_id", "event_type", "platform", "country"],
    "geographic_distribution": ["user_id", "event_type", "platform", "device", "country", "region", "city"],
    "session": ["grain", "filter_dim", "filter_value"],  # session_cube
    "engagement": ["grain", "filter_dim", "filter_value"],  # engagement_cube
    "activity": ["grain", "platform", "filter_dim", "filter_value"],  # activity_cube
    "geo": ["grain", "group_by", "country", "region", "city"],  # geo_cube
    "geo_user": ["filter_dim", "filter_value", "group_by", "country", "region", "city", "user_id"],  # geo_user_spans
    "event_user": ["filter_dim", "filter_value", "event_type", "user_id"],  # event_user_spans
    "geo_day": ["filter_dim", "filter_value", "country", "region", "city"],  # geo_day_sums
    "event_day": ["filter_dim", "filter_value", "event_type"],  # event_day_sums
}
MART_MEASURES = {
    "session_metrics": ["session_count", "bounced_sessions", "duration_sum"],
    "user_engagement": ["event_count", "duration_sum"],
    "active_users": [],
    "geographic_distribution": ["event_count", "duration_sum"],
    "session": ["session_count", "bounced_sessions", "duration_sum"],
    "engagement": ["event_count", "duration_sum", "unique_users"],
    "activity": ["active_users"],
    "geo": ["event_count", "unique_users", "duration_sum"],
    "geo_user": ["first_day", "last_day"],
    "event_user": ["first_day", "last_day"],
    "geo_day": ["event_count", "duration_sum"],
    "event_day": ["event_count", "duration_sum"],
}


# Marts compared by meaning: an event type's bit depends on the order the types arrived in (a full
# rebuild numbers them by first day), so the masks are compared as the sets of types they stand for.
MART_QUERIES = {
    "event_type_bits": "SELECT event_type, count(DISTINCT bit) OVER () = count(*) OVER () FROM marts.event_type_bits",
    "user_event_types_daily": """
        SELECT m.period_start, u.user_id, m.platform, m.device, m.country, m.region, m.city,
               list_sort(list(b.event_type))
        FROM marts.user_event_types_daily AS m
        JOIN marts.event_type_bits AS b ON (m.event_types >> b.bit) & 1 = 1
        LEFT JOIN intermediate.int_user_keys AS u USING (user_key)
        GROUP BY ALL""",
}


def dbt_invoke(command: str, *args: str) -> None:
    """The real dbt, in this process, as the refresh job runs it."""
    from orchestration.assets.dbt import dbt_project
    from orchestration.dbt_runner import invoke_dbt

    result = invoke_dbt(dbt_project, [command, *args], Settings().state_dir / "dbt_target")
    assert result.success, result.exception or [r.message for r in result.result if r.status not in ("pass", "success")]


def mart_contents(settings) -> dict[str, list[tuple]]:
    con = connect_warehouse(settings)
    con.execute(f"ATTACH '{settings.marts_path}' AS marts (READ_ONLY)")
    try:
        out = {}
        for mart in PUBLISHED_MARTS:
            if mart in MART_QUERIES:
                out[mart] = sorted(con.execute(MART_QUERIES[mart]).fetchall(), key=repr)
                continue
            family = mart.rsplit("_", 1)[0]
            period = [] if family.endswith("_user") else ["period_start"]  # the user spans have no period
            cols = [*period, *MART_DIMENSIONS[family], *MART_MEASURES[family]]
            join = "LEFT JOIN intermediate.int_user_keys USING (user_key)" if "user_id" in cols else ""
            out[mart] = sorted(
                con.execute(f"SELECT {', '.join(cols)} FROM marts.{mart} {join}").fetchall(), key=repr
            )
        return out
    finally:
        con.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_builds_equal_a_full_rebuild(engage_home, seed):
    """Load random splits file by file (late events, sessions split over files) with a dbt build
    after each; the marts must equal those of a full rebuild from raw."""
    events = edge_case_events(seed=seed, n_events=1500)
    files = split_into_files(events, seed=seed, n_files=random.Random(seed).randint(3, 5))
    for i, chunk in enumerate(files):
        write_ndjson(engage_home.landing / f"f{i}.ndjson", chunk)
        load_pending(engage_home)
        dbt_invoke("run")  # the tests run once, on the final state, below
    dbt_invoke("build")
    incremental = mart_contents(engage_home)
    dbt_invoke("build", "--full-refresh")
    full = mart_contents(engage_home)
    for mart in PUBLISHED_MARTS:
        assert incremental[mart] == full[mart], mart
        assert full[mart], f"{mart} is empty"


def test_definitions_load_with_assets_checks_sensor_schedule():
    from orchestration.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw/user_events", "raw/user_events_quarantine", "raw/loaded_files", "published_snapshot"} <= keys
    assert {f"marts/{m}" for m in PUBLISHED_MARTS} <= keys
    checks = defs.resolve_asset_graph().asset_check_keys
    assert any(c.asset_key.to_user_string() == "intermediate/int_sessions" for c in checks)
    assert defs.resolve_sensor_def("landing_sensor")
    assert defs.resolve_schedule_def("daily_rebuild").cron_schedule == "0 3 * * *"


def test_sensor_requests_one_run_per_batch_of_new_files(engage_home):
    from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

    from orchestration.sensors import landing_sensor

    instance = DagsterInstance.ephemeral()
    context = build_sensor_context(instance=instance)
    assert isinstance(landing_sensor(context), SkipReason)
    write_ndjson(engage_home.landing / "a.ndjson", edge_case_events(seed=3, n_events=50))
    first = landing_sensor(context)
    assert isinstance(first, RunRequest) and first.run_key
    context = build_sensor_context(instance=instance, cursor=context.cursor)
    assert isinstance(landing_sensor(context), SkipReason)  # same files: no second run
    write_ndjson(engage_home.landing / "b.ndjson", edge_case_events(seed=4, n_events=50))
    second = landing_sensor(build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(second, RunRequest) and second.run_key != first.run_key
    # Once loaded, the files are no longer pending.
    load_pending(engage_home)
    assert isinstance(landing_sensor(build_sensor_context(instance=instance)), SkipReason)


def test_refresh_job_materializes_end_to_end(published_home):
    """The fixture ran the real refresh_job twice; its snapshot holds exactly the raw data."""
    settings = published_home.settings
    snapshot = current_snapshot(settings)
    assert snapshot is not None
    con = duckdb.connect(str(snapshot.path), read_only=True)
    try:
        info = con.execute("SELECT raw_event_count, watermark FROM snapshot_info").fetchall()[0]
        expected = published_home.oracle.execute("SELECT count(*), max(timestamp) FROM user_events").fetchall()[0]
        assert info == expected
        sessions = con.execute("SELECT sum(session_count) FROM session_metrics_daily").fetchall()[0][0]
        assert sessions == published_home.oracle.execute(
            "SELECT count(DISTINCT session_id) FROM user_events").fetchall()[0][0]
    finally:
        con.close()
    assert len(list(settings.snapshots_dir.glob("*.duckdb"))) == 2  # one per run, within snapshots_keep


def test_dbt_gets_the_pipeline_memory_limit_from_the_settings(tmp_path, monkeypatch):
    """One fact: the Dagster resource exports ENGAGE_PIPELINE_MEMORY_LIMIT for dbt's profile, whose
    own default (for dbt run by hand) is the settings' default."""
    from orchestration.resources import EngageResource

    profile = (Path(__file__).resolve().parent.parent / "dbt_project" / "profiles.yml").read_text()
    [profile_default] = re.findall(r"env_var\('ENGAGE_PIPELINE_MEMORY_LIMIT', '([^']+)'\)", profile)
    assert profile_default == Settings.model_fields["pipeline_memory_limit"].default
    for exported in ("ENGAGE_WAREHOUSE_PATH", "ENGAGE_MARTS_PATH"):  # restored after the test
        monkeypatch.setenv(exported, "unset")
    monkeypatch.setenv("ENGAGE_PIPELINE_MEMORY_LIMIT", "1500MB")
    monkeypatch.setenv("ENGAGE_HOME", str(tmp_path / "home"))
    EngageResource().settings()
    assert os.environ["ENGAGE_PIPELINE_MEMORY_LIMIT"] == "1500MB"
    monkeypatch.delenv("ENGAGE_PIPELINE_MEMORY_LIMIT")
    EngageResource().settings()
    assert os.environ["ENGAGE_PIPELINE_MEMORY_LIMIT"] == profile_default


def test_a_mart_whose_columns_changed_needs_a_full_refresh(engage_home):
    """An incremental run over a mart of an older shape (a release changed its columns) stops with a
    message naming the full refresh, instead of failing on a binder error or merging rows of the new
    shape into it; the full refresh (the daily rebuild) then builds it."""
    from orchestration.assets.dbt import dbt_project
    from orchestration.dbt_runner import invoke_dbt

    events = edge_case_events(seed=5, n_events=300)
    first, second = split_into_files(events, seed=5, n_files=2)
    write_ndjson(engage_home.landing / "a.ndjson", first)
    load_pending(engage_home)
    dbt_invoke("run")
    con = duckdb.connect(str(engage_home.marts_path))
    con.execute("CREATE OR REPLACE TABLE geo_user_spans AS SELECT * EXCLUDE (group_by) FROM geo_user_spans")
    con.close()
    write_ndjson(engage_home.landing / "b.ndjson", second)
    load_pending(engage_home)
    result = invoke_dbt(dbt_project, ["run"], engage_home.state_dir / "dbt_target")
    assert not result.success
    failed = [r for r in result.result if r.status not in ("pass", "success", "skipped")]
    assert [r.node.name for r in failed] == ["geo_user_spans"]
    assert "lacks the columns group_by" in failed[0].message and "--full-refresh" in failed[0].message, \
        failed[0].message
    dbt_invoke("build", "--full-refresh")
    con = duckdb.connect(str(engage_home.marts_path), read_only=True)
    assert con.execute("SELECT count(DISTINCT group_by) FROM geo_user_spans").fetchone()[0] == 3
    con.close()
