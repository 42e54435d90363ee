"""The project's `incremental` materialization (dbt_project/macros/materializations/incremental.sql)
merges new rows after one query of both column lists. A model whose columns no longer match its
stored table (a release changed it) still stops with dbt's own `on_schema_change: fail` message and
changes nothing; a full refresh rebuilds it. (That incremental runs equal full rebuilds, file after
file, is tests/test_pipeline.py.)"""

from __future__ import annotations

import duckdb
from edge_data import edge_case_events, write_ndjson

from engage.loader import load_pending
from engage.settings import Settings

CUT = "2025-02-03 00:00:00"
WIDENED = "active_users_daily"  # the stored table gains a column the model does not have
RETYPED = "session_metrics_hourly"  # a stored column's type differs from the model's


def run_dbt(*args: str, callbacks=()):
    """Run dbt as the refresh job does (in this process, the home's dbt target); dbt's result."""
    from orchestration.assets.dbt import dbt_project, dbt_target
    from orchestration.dbt_runner import invoke_dbt

    return invoke_dbt(dbt_project, list(args), dbt_target(Settings()), callbacks=callbacks)


def dbt(*args: str) -> dict[str, tuple[str, str]]:
    """The status and message of every node, by name."""
    result = run_dbt(*args)
    assert result.result is not None, result.exception
    return {r.node.name: (str(r.status), r.message or "") for r in result.result.results}


def mart(settings: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(settings.marts_path)) as marts:
        return marts.execute(sql).fetchall()


def columns(settings: Settings, table: str) -> list[tuple[str, str]]:
    return mart(settings, f"SELECT column_name, column_type FROM (DESCRIBE {table})")


def test_changed_columns_stop_the_incremental_run_with_dbts_message_and_a_full_refresh_mends_them(engage_home):
    events = edge_case_events(seed=23, n_events=1500)
    write_ndjson(engage_home.landing / "old.ndjson", [e for e in events if e["timestamp"] < CUT])
    load_pending(engage_home)
    statuses = dbt("run")
    assert {s for s, _ in statuses.values()} == {"success"}
    built = {t: columns(engage_home, t) for t in (WIDENED, RETYPED)}
    assert ("session_count", "BIGINT") in built[RETYPED]

    mart(engage_home, f"ALTER TABLE {WIDENED} ADD COLUMN stale_column INTEGER")
    mart(engage_home, f"ALTER TABLE {RETYPED} ALTER COLUMN session_count TYPE DOUBLE")
    rows_before = {t: mart(engage_home, f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {t}") for t in (WIDENED, RETYPED)}
    write_ndjson(engage_home.landing / "new.ndjson", [e for e in events if e["timestamp"] >= CUT])
    load_pending(engage_home)

    statuses = dbt("run")
    for table, detail in ((WIDENED, "stale_column"), (RETYPED, "session_count")):
        status, message = statuses[table]
        assert status == "error" and "out of sync" in message and detail in message, (table, message)
        assert mart(engage_home, f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {table}") == rows_before[table]
    others = {name: s for name, (s, _) in statuses.items() if name not in (WIDENED, RETYPED)}
    assert set(others.values()) <= {"success", "skipped"} and "success" in others.values()

    statuses = dbt("run", "--full-refresh")
    assert {s for s, _ in statuses.values()} == {"success"}
    assert {t: columns(engage_home, t) for t in (WIDENED, RETYPED)} == built


def test_a_build_with_few_new_rows_runs_duckdb_on_one_thread_and_a_large_one_on_all(engage_home):
    """macros/threads.sql: the refresh's small queries run on one DuckDB thread each; a full refresh,
    or more new raw rows than `few_new_rows` since the last tested build, keeps every core."""
    def threads_set(*args: str) -> list[str]:
        messages: list[str] = []
        result = run_dbt(*args, callbacks=[lambda event: messages.append(event.info.msg)])
        assert result.success, result.exception
        return [m for m in messages if m.startswith("duckdb_threads=")]

    def raw_rows(batch: int) -> int:
        from engage.loader import connect_warehouse

        con = connect_warehouse(engage_home)
        try:
            return con.execute("SELECT count(*) FROM raw.user_events WHERE _batch_id = ?", [batch]).fetchone()[0]
        finally:
            con.close()

    events = edge_case_events(seed=29, n_events=900)
    thirds = [events[i::3] for i in range(3)]
    for n, part in enumerate(thirds, start=1):
        write_ndjson(engage_home.landing / f"part{n}.ndjson", part)
        load_pending(engage_home)
        if n == 1:
            # a first build: every raw row is new; fewer than few_new_rows here
            assert threads_set("build") == [f"duckdb_threads=1 new_rows={raw_rows(1)} (a small build: one DuckDB thread per query)"]
        elif n == 2:
            assert [m.split()[1] for m in threads_set("build")] == [f"new_rows={raw_rows(2)}"]
        else:
            assert threads_set("build", "--vars", f"{{few_new_rows: {raw_rows(3) - 1}}}") == []
    assert threads_set("build", "--full-refresh") == []
