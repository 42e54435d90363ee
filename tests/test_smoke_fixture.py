import duckdb

from engage.snapshots import current_snapshot


def test_published_snapshot_holds_every_event(published_home):
    snap = current_snapshot(published_home.settings)
    con = duckdb.connect(str(snap.path), read_only=True)
    marts = con.execute("select sum(event_count), sum(duration_sum) from user_engagement_hourly").fetchall()[0]
    raw = published_home.oracle.execute("select count(*), sum(duration) from user_events").fetchall()[0]
    assert marts == raw
