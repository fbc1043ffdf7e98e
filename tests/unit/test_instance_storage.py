"""The local instance's event log: connections kept per shard, files a stock instance reads."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry

from asr_assets.platform import instance_storage
from asr_assets.platform.instance_storage import (
    KeptConnectionSqliteEventLogStorage,
    LocalInstance,
)

ROOT = Path(__file__).resolve().parents[2]


def shipped_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return path


def log_entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
    )


def messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        record.event_log_entry.user_message
        for record in instance.get_records_for_run(run_id, limit=10_000).records
    ]


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQLite connection opened in this process while the test runs (by database)."""
    opened: list[str] = []
    real_connect = sqlite3.connect

    def counting(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(str(database))
        return real_connect(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", counting)
    yield opened


def test_the_shipped_dagster_yaml_opens_the_kept_connection_storage(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(shipped_home(tmp_path))) as instance:
        assert isinstance(instance, LocalInstance)
        assert isinstance(instance.event_log_storage, KeptConnectionSqliteEventLogStorage)
        # The same layout as Dagster's default storage: the instance's own directory.
        assert Path(instance.event_log_storage._base_dir) == tmp_path / "history" / "runs"


def test_storing_many_events_opens_one_connection_per_shard(
    tmp_path: Path, connections: list[str]
) -> None:
    """Dagster's own SQLite event log opened (and closed) a connection for every event."""
    with dg.DagsterInstance.from_config(str(shipped_home(tmp_path))) as instance:
        storage = instance.event_log_storage
        storage.store_event(log_entry("run-a", "warm-up"))  # creates the shard
        before = len(connections)
        for index in range(50):
            storage.store_event(log_entry("run-a", f"event {index}"))
        assert len(connections) - before == 0
        assert messages(instance, "run-a") == ["warm-up", *(f"event {i}" for i in range(50))]


def test_a_stock_instance_reads_what_the_local_one_wrote_while_it_stays_open(
    tmp_path: Path,
) -> None:
    home = shipped_home(tmp_path / "home")
    stock_home = tmp_path / "stock"
    stock_home.mkdir()
    (stock_home / "dagster.yaml").write_text(
        f"telemetry:\n  enabled: false\nstorage:\n  sqlite:\n    base_dir: {home}\n"
    )
    with (
        dg.DagsterInstance.from_config(str(home)) as local,
        dg.DagsterInstance.from_config(str(stock_home)) as stock,
    ):
        assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"
        local.event_log_storage.store_event(log_entry("run-b", "first"))
        assert messages(stock, "run-b") == ["first"]
        # Written through the kept connection after the other reader has looked: still seen.
        local.event_log_storage.store_event(log_entry("run-b", "second"))
        assert messages(stock, "run-b") == ["first", "second"]
        stock.event_log_storage.store_event(log_entry("run-b", "third"))
        assert messages(local, "run-b") == ["first", "second", "third"]


def test_wipe_closes_kept_connections_so_new_events_land_in_new_files(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(shipped_home(tmp_path))) as instance:
        storage = instance.event_log_storage
        storage.store_event(log_entry("run-c", "before wipe"))
        storage.wipe()
        assert not (tmp_path / "history" / "runs" / "run-c.db").exists()
        storage.store_event(log_entry("run-c", "after wipe"))
        assert (tmp_path / "history" / "runs" / "run-c.db").is_file()
    # A fresh process's view: what was written after the wipe is on disk, nothing before it.
    with dg.DagsterInstance.from_config(str(tmp_path)) as reopened:
        assert messages(reopened, "run-c") == ["after wipe"]


def test_open_shards_are_bounded_and_evicted_ones_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instance_storage, "MAX_OPEN_SHARDS", 3)
    with dg.DagsterInstance.from_config(str(shipped_home(tmp_path))) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, KeptConnectionSqliteEventLogStorage)
        runs = [f"run-{index}" for index in range(8)]
        for run_id in runs:
            storage.store_event(log_entry(run_id, f"hello {run_id}"))
        assert len(storage._engines) <= 3
        for run_id in runs:
            assert messages(instance, run_id) == [f"hello {run_id}"]


def test_threads_storing_events_for_one_run_lose_none(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(shipped_home(tmp_path))) as instance:
        storage = instance.event_log_storage
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                for index in range(25):
                    storage.store_event(log_entry("run-d", f"{worker}:{index}"))
            except BaseException as exc:  # surfaced below, not swallowed
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        stored = messages(instance, "run-d")
        assert sorted(stored) == sorted(f"{w}:{i}" for w in range(4) for i in range(25))
