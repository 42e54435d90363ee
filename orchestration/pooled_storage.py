"""Dagster's SQLite storage as a run worker uses it: the same files, tables and semantics, fewer
connections.

Dagster's SQLite event log creates a SQLAlchemy engine and opens a new SQLite connection for every
read and write: a refresh's ~95 events and ~17 data-version reads cost ~300 connections (open, read
the schema, and on close a WAL checkpoint and the -wal file unlinked) and compile every statement
afresh (the compiled-statement cache belongs to the engine): in a +1% refresh at 10 M events, ~0.8 s
of the step's thread opening and closing connections and ~0.45 s compiling (cProfile, in one
process), beside dbt's two threads on the two cores. Here each database keeps its engine, so
statements compile once, and the index database (asset records, read for every materialization's
data version and written for every asset event) keeps one open connection. A run's own database is
still opened and closed per use, as Dagster does: its file watchers (the UI following a run live)
look for changes to that file, which a kept connection would leave in the -wal file. The deployed
refresh: median 3.10 -> 2.78 s (docs/PERFORMANCE.md, notes).

The run worker (orchestration/run_worker.py) swaps this in for Dagster's default SQLite storage in the
instance reference it gets, and `engage ingest` in its own instance; any other storage (Postgres, a
custom one) is used as configured.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool

DEFAULT_SQLITE_STORAGE = ("dagster._core.storage.sqlite_storage", "DagsterSqliteStorage")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage keeping each database's engine, and one open connection to the index."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: dict[str, Engine] = {}
        self._engines_lock = threading.Lock()  # has_table runs outside _connect's lock
        self._tables_seen: set[str] = set()  # of the index: a table, once there, stays
        super().__init__(base_dir, inst_data)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            return self._engines.get(shard) or self._create_engine(shard)

    def _create_engine(self, shard: str) -> Engine:
        if shard == INDEX_SHARD_NAME:
            # One connection, returned to the pool (rolled back) after each use: it holds no lock or
            # snapshot between uses, so other processes read and write the index as before. Any
            # further connection at the same time (has_table inside a write) is closed after use.
            pool = {"poolclass": QueuePool, "pool_size": 1, "max_overflow": -1}
            connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
        else:
            pool = {"poolclass": NullPool}
            connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        engine = self._engines[shard] = create_engine(self.conn_string_for_shard(shard), **pool,
                                                      connect_args=connect_args)
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As SqliteEventLogStorage._connect, with the engine kept (under the same lock).
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def has_table(self, table_name: str) -> bool:
        # Dagster's asks a new engine on every asset event.
        if table_name not in self._tables_seen:
            engine = self._engine(INDEX_SHARD_NAME)
            with engine.connect() as conn:
                if engine.dialect.has_table(conn, table_name):
                    self._tables_seen.add(table_name)
        return table_name in self._tables_seen

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.dispose()

    def delete_events(self, run_id: str) -> None:
        super().delete_events(run_id)
        self._dispose_engines()

    def wipe(self) -> None:
        self._dispose_engines()  # the run databases' files are deleted
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (runs, schedules, event log under one folder), whose event
    log is a PooledSqliteEventLogStorage."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


def with_pooled_sqlite_storage(ref: InstanceRef) -> InstanceRef:
    """The instance reference with PooledSqliteStorage in place of Dagster's default SQLite storage
    (the same folder); any other storage is kept."""
    data = ref.storage_data
    if data is None or (data.module_name, data.class_name) != DEFAULT_SQLITE_STORAGE:
        return ref
    pooled = ConfigurableClassData(__name__, PooledSqliteStorage.__name__, data.config_yaml)
    return ref._replace(storage_data=pooled)


def open_pooled_instance(dagster_home: str) -> DagsterInstance:
    """The Dagster instance of `dagster_home` (its dagster.yaml), with PooledSqliteStorage in place of
    Dagster's default SQLite storage."""
    return DagsterInstance.from_ref(with_pooled_sqlite_storage(InstanceRef.from_dir(dagster_home)))
