"""Platform database: Alembic migrations on PostgreSQL and SQLite match the models; keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from asr_assets.platform.tenancy import auth
from asr_assets.platform.tenancy.database import alembic_config, make_engine, migrate, sessions
from asr_assets.platform.tenancy.models import ApiKey, Base
from asr_assets.platform.tenancy.settings import Quotas
from tests.support.platform_api import pg_url  # noqa: F401 - fixture

TABLES = {"tenants", "api_keys", "jobs", "usage", "alembic_version"}


def _check(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
        migrate(engine)  # a second start is a no-op
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], diff
        config = alembic_config(url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(engine)
        with sessions(engine).begin() as session:
            _, key = auth.create_tenant(
                session, "team-a", allowed_prefixes=["s3://audio/team-a/"], quotas=Quotas()
            )
        with sessions(engine).begin() as session:
            stored = session.get(ApiKey, key.key_id)
            assert stored is not None and key.token not in stored.key_hash  # only the hash
            assert auth.authenticate(session, key.token).name == "team-a"
            assert auth.revoke_key(session, key.key_id)
        with sessions(engine)() as session:
            assert auth.authenticate(session, key.token) is None
    finally:
        engine.dispose()


@pytest.mark.integration
def test_migrations_on_postgresql(pg_url: str) -> None:  # noqa: F811
    _check(pg_url)


def test_migrations_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'platform.db'}")
