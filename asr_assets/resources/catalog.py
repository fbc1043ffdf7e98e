"""The activity catalog interface and its DuckDB (embedded) implementation."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field

from asr_assets.core.sql import Dialect, activities_query
from asr_assets.core.storage import catalog_partition_prefix, partition_date
from asr_assets.core.tables import CATALOG_SCHEMA
from asr_assets.observability.logging import get_logger

log = get_logger(__name__)


class CatalogUnavailableError(RuntimeError):
    """The catalog could not be queried (after the resource's own retries)."""


class EmptyCatalogPartitionError(LookupError):
    """The catalog has no rows for the day: a missing or mistyped data root, or a day not loaded.

    Permanent: a retry reads the same nothing. A day that is empty on purpose is scored with the
    `activities` config `allow_empty_day: true`.
    """


def conform_catalog_table(table: pa.Table) -> pa.Table:
    """Cast a catalog result to the data contract's column types.

    Writers differ (int64 phrase_index, ns timestamps, naive times); values that do not fit are
    left to row validation in the activities stage, which turns them into error rows.
    """
    missing = [name for name in CATALOG_SCHEMA.names if name not in table.column_names]
    if missing:
        raise CatalogUnavailableError(f"catalog result lacks columns {missing}")
    columns = []
    for field in CATALOG_SCHEMA:
        column = table.column(field.name)
        if (
            pa.types.is_timestamp(field.type)
            and pa.types.is_timestamp(column.type)
            and column.type.tz is None
        ):
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
        try:
            column = column.cast(field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            # Every row then fails validation with a reason code; say why once, here.
            log.warning(
                "catalog_column_uncastable",
                column=field.name,
                from_type=str(column.type),
                to_type=str(field.type),
                error=type(exc).__name__,
                status="nulled",
            )
            column = pa.array([None] * len(table), type=field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=CATALOG_SCHEMA)


class ActivityCatalog(dg.ConfigurableResource):
    """Returns one partition's phrases in the catalog data contract."""

    @abstractmethod
    def fetch_activities(
        self, partition_key: str, tenant_ids: list[str] | None = None
    ) -> pa.Table: ...

    def unavailable_reason(self) -> str | None:
        """None when the catalog answers now; else why not. A cheap probe (sensors skip with it)."""
        return None

    def describe_location(self, partition_key: str) -> str:
        """Where the day's rows are looked for, for errors a person reads."""
        return f"{type(self).__name__} for activity_date={partition_key}"


class DuckDBActivityCatalog(ActivityCatalog):
    """Embedded catalog: DuckDB over the Parquet under `catalog/activities/` in the local store."""

    root: str = Field(description="Local store root (ASR_DATA_ROOT) holding catalog/activities/.")

    def describe_location(self, partition_key: str) -> str:
        return str(Path(self.root).resolve() / catalog_partition_prefix(partition_key))

    def fetch_activities(self, partition_key: str, tenant_ids: list[str] | None = None) -> pa.Table:
        import duckdb

        day = partition_date(partition_key)
        directory = Path(self.root).resolve() / catalog_partition_prefix(partition_key)
        if not any(directory.glob("*.parquet")):
            return CATALOG_SCHEMA.empty_table()
        source = "read_parquet(?, union_by_name = true, hive_partitioning = false)"
        query = activities_query(Dialect.DUCKDB, source, day, tenant_ids)
        connection = duckdb.connect(database=":memory:")
        try:
            result = connection.sql(
                query.sql, params=[str(directory / "*.parquet"), *query.parameters]
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise CatalogUnavailableError(f"DuckDB catalog query failed: {exc}") from exc
        finally:
            connection.close()
        return conform_catalog_table(result)
