"""SQLite instance storage for local use whose event log keeps its connections.

Dagster's SQLite event log opens a new SQLAlchemy engine, connection and statement compile for
every event it stores, then throws them away. A scoring run writes ~110 events; on the 2-core
machine that cost 1.5 s of a 3.2 s one-phrase `asr score` (profiled: 0.4 s compiling the same
INSERT again for each fresh engine, 0.5 s opening and closing connections, 0.35 s committing).
This storage keeps one engine per shard for the life of the process, so statements compile
once and a connection is reused; commits, and so durability, are unchanged. Everything else is
Dagster's: the same files, schema, migrations and watchers, readable by a stock instance.

The project's `dagster.yaml` (local runs, `make demo`, `make dev`) names `LocalInstance`, whose
default storage this is, rooted in the instance's own directory (a storage configured with a
path would need the directory written into the file or read from `DAGSTER_HOME`, which need not
be the instance being opened). Production uses Postgres (deploy/dagster/dagster.yaml).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import yaml
from dagster._core.instance import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

#: Shards with an open engine. A run writes two (its own and the index); a webserver reads many,
#: so the least recently used ones are closed beyond this.
MAX_OPEN_SHARDS = 16


class KeptConnectionSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with one engine (one connection) per shard, kept open.

    One connection per shard is enough: every use in this process runs under the base class's
    lock, so a connection never serves two threads at once. Engines are created, evicted and
    closed under that lock too.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, str]
    ) -> KeptConnectionSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if self._engines_pid != os.getpid():
            # A forked child must not use (or close) its parent's SQLite connections.
            self._engines = OrderedDict()
            self._engines_pid = os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=StaticPool,
                connect_args={
                    "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                    # Used by one thread at a time (the base class's lock), not by one thread.
                    "check_same_thread": False,
                },
            )
        self._engines[shard] = engine
        while len(self._engines) > MAX_OPEN_SHARDS:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    def _close_engines(self) -> None:
        with self._db_lock:
            if self._engines_pid == os.getpid():
                for engine in self._engines.values():
                    engine.dispose()
            self._engines.clear()

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def wipe(self) -> None:
        # Wiping unlinks the run shards: a kept connection would go on writing to a deleted file.
        self._close_engines()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_engines()


class KeptConnectionSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage, with the event log above; same files and layout."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = KeptConnectionSqliteEventLogStorage(
            _event_logs_directory(base_dir)
        )
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, str]
    ) -> KeptConnectionSqliteStorage:
        # The base class names itself here; `from_local` (mkdir, then `cls`) builds this class.
        return cls.from_local(inst_data=inst_data, **config_value)


class LocalInstance(DagsterInstance):
    """A Dagster instance whose default storage is `KeptConnectionSqliteStorage`.

    Only the default changes: a `storage:` block in `dagster.yaml` still wins.
    """

    @classmethod
    def config_schema(cls) -> dict[str, object]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__,
            KeptConnectionSqliteStorage.__name__,
            yaml.dump({"base_dir": base_dir}, default_flow_style=False),
        )
        return defaults
