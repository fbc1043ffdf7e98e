"""The shipped instance configurations: the per-tenant run queue, and Dagster on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from asr_assets.platform.api.backend import PlatformJobsBackend
from tests.support.platform_api import PG_BASE

ROOT = Path(__file__).resolve().parents[2]


def _tenant_limit(instance: dg.DagsterInstance) -> dict:
    coordinator = instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    [limit] = [
        rule
        for rule in coordinator.get_run_queue_config().tag_concurrency_limits
        if rule["key"] == "asr/tenant"
    ]
    return limit


def test_local_instance_limits_runs_per_tenant(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limit = _tenant_limit(instance)
    assert limit["value"] == {"applyLimitPerUniqueValue": True} and limit["limit"] >= 1


@pytest.fixture
def dagster_pg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    name = f"asr_dagster_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster" / "dagster.postgres.yaml", home / "dagster.yaml")
    url = admin.url
    for key, value in {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": name,
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield home
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.integration
def test_production_instance_keeps_dagster_storage_in_postgres(dagster_pg_home: Path) -> None:
    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(dagster_pg_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert _tenant_limit(instance)["value"] == {"applyLimitPerUniqueValue": True}
        result = dg.materialize(
            [probe], instance=instance, tags={"asr/tenant": "team-a", "dagster/priority": "10"}
        )
        assert result.success
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={"asr/tenant": "team-a"}))
        assert run.tags["dagster/priority"] == "10"
    # The jobs API's readiness check talks to this instance (DAGSTER_HOME).
    assert os.environ["DAGSTER_HOME"] == str(dagster_pg_home)
    PlatformJobsBackend().check_ready()
