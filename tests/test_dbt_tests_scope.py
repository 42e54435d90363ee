"""dbt tests on an incremental build read only what changed since the last build whose tests all
passed (dbt_project/macros/tested_scope.sql); a full rebuild, and `full_tests`, read everything."""

from __future__ import annotations

import json

import duckdb
from edge_data import edge_case_events, write_ndjson

from engage.loader import connect_warehouse, load_pending
from engage.settings import Settings
from engage.snapshots import discard_marts

CUT = "2025-02-03 00:00:00"  # file 1: the events before, file 2: those from then on (other hours)
HOURLY_GRAIN = "grain_user_engagement_hourly"
SESSIONS_UNIQUE = "unique_keys_int_sessions_session_id"
TOTALS = "assert_event_marts_match_raw_totals"
SESSION_TOTALS = "assert_session_marts_match_raw_sessions"
BUGS_FOUND = {HOURLY_GRAIN, SESSIONS_UNIQUE, TOTALS, SESSION_TOTALS}


def dbt(command: str, *args: str) -> dict[str, str]:
    """Run dbt as the refresh job does; the status of every test (by name prefix) and model."""
    from orchestration.assets.dbt import dbt_project, dbt_target
    from orchestration.dbt_runner import invoke_dbt

    result = invoke_dbt(dbt_project, [command, *args], dbt_target(Settings()))
    assert result.result is not None, result.exception
    return {r.node.name: str(r.status) for r in result.result.results}


def failed(statuses: dict[str, str]) -> set[str]:
    """Names of failing tests, shortened to the prefixes above."""
    out = set()
    for name, status in statuses.items():
        if status == "fail":
            out |= {p for p in BUGS_FOUND if name.startswith(p)} or {name}
    return out


def recorded_batch(settings: Settings) -> int | None:
    con = connect_warehouse(settings)
    try:
        rows = con.execute("SELECT batch_id FROM main.tested_through").fetchall()
        return rows[0][0] if rows else None
    finally:
        con.close()


def corrupt(settings: Settings, before_cut: bool) -> None:
    """Duplicate one row of user_engagement_hourly and of int_sessions in the old part (before
    CUT) or the new one: a uniqueness bug and a totals bug in one go."""
    op = "<" if before_cut else ">="
    with duckdb.connect(str(settings.marts_path)) as marts:
        marts.execute(f"INSERT INTO user_engagement_hourly SELECT * FROM user_engagement_hourly "
                      f"WHERE period_start {op} '{CUT}' LIMIT 1")
    con = connect_warehouse(settings)
    try:
        con.execute(f"INSERT INTO intermediate.int_sessions SELECT * FROM intermediate.int_sessions "
                    f"WHERE session_start {op} '{CUT}' AND session_id IN (SELECT session_id FROM raw.user_events "
                    f"GROUP BY ALL HAVING min(timestamp) {op} '{CUT}' AND max(timestamp) {op} '{CUT}') LIMIT 1")
    finally:
        con.close()


def test_incremental_tests_read_what_changed_and_full_tests_read_all(engage_home):
    events = edge_case_events(seed=5, n_events=1500)
    old = [e for e in events if e["timestamp"] < CUT]
    new = [e for e in events if e["timestamp"] >= CUT]
    assert old and new
    write_ndjson(engage_home.landing / "old.ndjson", old)
    load_pending(engage_home)
    assert not failed(dbt("build"))
    assert recorded_batch(engage_home) == 1  # the first build tested everything

    write_ndjson(engage_home.landing / "new.ndjson", new)
    load_pending(engage_home)
    assert "fail" not in dbt("run").values()
    assert recorded_batch(engage_home) == 1  # `dbt run` tests nothing, so records nothing

    # A bug in partitions this build did not rewrite: rows tested by the first build. The
    # incremental tests do not read them again; full tests do. (The session marts are incremental
    # too: `dbt run` leaves them as they are, the damaged session being older than their watermark.)
    corrupt(engage_home, before_cut=True)
    assert "fail" not in dbt("run").values()
    assert failed(dbt("test")) == set()
    assert failed(dbt("test", "--vars", "{full_tests: true}")) == BUGS_FOUND

    # The same bug in the partitions that changed since: the incremental tests see it.
    corrupt(engage_home, before_cut=False)
    assert "fail" not in dbt("run").values()
    assert failed(dbt("test")) == BUGS_FOUND
    statuses = dbt("build")  # the tests of a damaged model fail, those downstream of it are skipped
    assert failed(statuses) == {HOURLY_GRAIN, SESSIONS_UNIQUE}
    assert recorded_batch(engage_home) == 1  # a failing build records nothing: its rows stay to test

    # A mart written whole (here: its file is gone) has no tested rows: everything is tested again,
    # so the damaged sessions of the old part (int_sessions is in the warehouse) are found too.
    discard_marts(engage_home)
    statuses = dbt("build")
    assert SESSIONS_UNIQUE in failed(statuses)
    assert statuses["user_engagement_hourly"] == "success"
    assert recorded_batch(engage_home) is None

    # The full rebuild recomputes every mart from raw and tests all of it.
    statuses = dbt("build", "--full-refresh")
    assert failed(statuses) == set() and any(s == "pass" for s in statuses.values())
    assert recorded_batch(engage_home) == 2

    # The grain test also fails on a period that is not the start of its hour (no duplicate here).
    with duckdb.connect(str(engage_home.marts_path)) as marts:
        marts.execute("UPDATE user_engagement_hourly SET period_start = period_start + INTERVAL 1 MINUTE "
                      "WHERE rowid = (SELECT min(rowid) FROM user_engagement_hourly)")
    assert failed(dbt("test", "--select", "user_engagement_hourly", "--vars", "{full_tests: true}")) == {HOURLY_GRAIN}


def test_a_publish_makes_the_marts_file_the_snapshot_and_the_next_build_starts_from_a_copy(engage_home):
    """Publishing renames the built marts file into snapshots/ (no copy); `engage ingest` then copies
    the snapshot back for the next build. Restored from a snapshot older than the last build (a
    publish that stopped between its rename and the CURRENT swap), the next build catches up from the
    copy's own watermarks and tests every row newer than what the copy was tested through; a snapshot
    that does not record that has all rows tested again."""
    from engage.cli import run_refresh
    from engage.snapshots import INFO_TABLE, current_snapshot, restore_marts

    events = edge_case_events(seed=11, n_events=1500)
    old = [e for e in events if e["timestamp"] < CUT]
    new = [e for e in events if e["timestamp"] >= CUT]
    write_ndjson(engage_home.landing / "old.ndjson", old)
    assert run_refresh(engage_home).success
    first = current_snapshot(engage_home)
    assert engage_home.marts_path.read_bytes() == first.path.read_bytes()  # restored for the next build
    with duckdb.connect(str(first.path), read_only=True) as snap:
        assert snap.execute(f"SELECT tested_through_batch FROM {INFO_TABLE}").fetchone() == (1,)
    assert restore_marts(engage_home) is None  # nothing to do: the marts file is there

    write_ndjson(engage_home.landing / "new.ndjson", new)
    assert run_refresh(engage_home).success
    assert recorded_batch(engage_home) == 2
    latest = sorted(engage_home.snapshots_dir.glob("*.duckdb"))
    assert len(latest) == 2 and latest[0] == first.path

    # The stop between rename and swap: CURRENT still names the first snapshot, no marts file.
    (engage_home.snapshots_dir / "CURRENT").write_text(json.dumps({"snapshot_id": first.snapshot_id, "file": first.path.name}))
    engage_home.marts_path.unlink()
    restored = restore_marts(engage_home)
    assert restored["snapshot_id"] == first.snapshot_id and restored["tested_through"] == 1
    assert recorded_batch(engage_home) == 1  # the rows of batch 2 are built again, and tested again
    corrupt(engage_home, before_cut=False)  # int_sessions (warehouse) is ahead of the copy: its batch-2 rows are read again
    assert failed(dbt("build")) >= {SESSIONS_UNIQUE}

    # A snapshot from before `tested_through_batch` (an upgrade): every row is tested again.
    with duckdb.connect(str(first.path)) as snap:
        snap.execute(f"ALTER TABLE {INFO_TABLE} DROP COLUMN tested_through_batch")
    engage_home.marts_path.unlink()
    assert restore_marts(engage_home)["tested_through"] is None
    assert recorded_batch(engage_home) is None


def test_unique_keys_names_each_null_or_repeated_key_and_the_tested_batch_is_read_once(engage_home):
    """unique_keys (tests/generic/unique_keys.sql) fails on a NULL key and on a repeated one, a
    failing row each, naming its column and problem. A build reads the tested-through batch once
    (macros/tested_scope.sql), not once per test."""
    from orchestration.assets.dbt import dbt_target

    write_ndjson(engage_home.landing / "events.ndjson", edge_case_events(seed=7, n_events=600))
    load_pending(engage_home)
    statuses = dbt("build")
    assert not failed(statuses)
    write_ndjson(engage_home.landing / "more.ndjson", edge_case_events(seed=8, n_events=300))
    load_pending(engage_home)
    statuses = dbt("build")  # incremental: its tests read the tested-through batch
    assert not failed(statuses)
    build_log = (dbt_target(engage_home) / "logs" / "dbt.log").read_text().rsplit("Running with dbt", 1)[1]
    reads = build_log.count("select coalesce(max(batch_id), 0) from")
    tests = sum(1 for name in statuses if name.startswith(("unique_keys_", "grain_", "assert_", "not_null_")))
    # the on-run-start hook's threshold query, then once (twice if two threads ask at the same moment)
    assert reads <= 3 < tests

    con = connect_warehouse(engage_home)
    try:
        con.execute("INSERT INTO intermediate.int_user_keys (user_id, user_key, first_batch_id) "
                    "SELECT NULL, max(user_key) + 1, 1 FROM intermediate.int_user_keys")
        con.execute("INSERT INTO intermediate.int_user_keys (user_id, user_key, first_batch_id) "
                    "SELECT min(user_id), max(user_key) + 1, 1 FROM intermediate.int_user_keys")
    finally:
        con.close()
    statuses = dbt("test", "--select", "int_user_keys", "--store-failures")
    assert failed(statuses) == {"unique_keys_int_user_keys_user_id__user_key"}
    con = connect_warehouse(engage_home)
    try:
        (schema, table), = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                                       "WHERE table_name LIKE 'unique_keys_int_user_keys%'").fetchall()
        rows = con.execute(f'SELECT key_column, problem FROM "{schema}"."{table}" ORDER BY ALL').fetchall()
    finally:
        con.close()
    assert rows == [("user_id", "NULL in 1 row(s)"), ("user_id", "occurs 2 times")]
