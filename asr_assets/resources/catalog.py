"""The activity catalog interface and its DuckDB (embedded) implementation."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


_OPTIONAL_COLUMNS = frozenset({"audio_start_s", "audio_end_s"})


class EmptyCatalogPartitionError(LookupError):
    """The catalog has no rows for the day: a missing or mistyped data root, or a day not loaded.

    Permanent: a retry reads the same nothing. A day that is empty on purpose is scored with the
    `activities` config `allow_empty_day: true`.
    """


@dataclass(frozen=True)
class CatalogFileError:
    """A catalog file that could not be read at all: permanent, reported, never retried."""

    name: str
    message: str


@dataclass
class CatalogFetch:
    """One partition's catalog rows plus what could not be taken from it as data.

    `row_issues` maps a row number of `table` to the columns whose values did not fit the data
    contract (nulled there): the activities stage turns exactly those rows into error rows.
    """

    table: pa.Table
    row_issues: dict[int, list[str]] = field(default_factory=dict)
    file_errors: list[CatalogFileError] = field(default_factory=list)


def _parse_timestamp(value: object) -> datetime | None:
    """Reasonable text timestamps (ISO 8601, space or T, optional zone; naive means UTC)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _cast_values(column: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Cast value by value; returns the cast column and the rows whose value did not fit."""
    values: list[object] = []
    bad: list[int] = []
    for number, scalar in enumerate(column.to_pylist()):
        if scalar is None:
            values.append(None)
            continue
        try:
            if pa.types.is_timestamp(target):
                values.append(_parse_timestamp(scalar))
            else:
                values.append(pa.array([scalar]).cast(target, safe=True)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
            values.append(None)
            bad.append(number)
    return pa.array(values, type=target), bad


def conform_catalog_table(table: pa.Table) -> CatalogFetch:
    """Cast a catalog result to the data contract's column types, row by row where needed.

    Writers differ (int64 phrase_index, ns timestamps, naive or text times). A column that casts
    as a whole takes the fast path; otherwise each value is cast alone, and a value that does not
    fit nulls only its own row's cell and is reported in `row_issues`, so one bad value errors
    one row, not the day.
    """
    missing = [
        name
        for name in CATALOG_SCHEMA.names
        if name not in table.column_names and name not in _OPTIONAL_COLUMNS
    ]
    if missing:
        raise CatalogUnavailableError(f"catalog result lacks columns {missing}")
    columns = []
    issues: dict[int, list[str]] = {}
    for field_ in CATALOG_SCHEMA:
        if field_.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, type=field_.type))
            continue
        column = table.column(field_.name)
        if (
            pa.types.is_timestamp(field_.type)
            and pa.types.is_timestamp(column.type)
            and column.type.tz is None
        ):
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
        try:
            if pa.types.is_timestamp(field_.type) and not pa.types.is_timestamp(column.type):
                raise pa.ArrowInvalid("text timestamps are parsed value by value")
            column = column.cast(field_.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            column, bad = _cast_values(column, field_.type)
            for number in bad:
                issues.setdefault(number, []).append(field_.name)
            if bad:
                log.warning(
                    "catalog_values_uncastable",
                    column=field_.name,
                    from_type=str(table.column(field_.name).type),
                    to_type=str(field_.type),
                    rows=len(bad),
                    status="rows_errored",
                )
        columns.append(column)
    return CatalogFetch(pa.Table.from_arrays(columns, schema=CATALOG_SCHEMA), issues)


class ActivityCatalog(dg.ConfigurableResource):
    """Returns one partition's phrases in the catalog data contract."""

    @abstractmethod
    def fetch_activities(
        self, partition_key: str, tenant_ids: list[str] | None = None
    ) -> pa.Table: ...

    def fetch_activity_rows(
        self, partition_key: str, tenant_ids: list[str] | None = None
    ) -> CatalogFetch:
        """The partition's rows with per-row cast problems and unreadable files reported."""
        return CatalogFetch(self.fetch_activities(partition_key, tenant_ids))

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
        return self.fetch_activity_rows(partition_key, tenant_ids).table

    def fetch_activity_rows(
        self, partition_key: str, tenant_ids: list[str] | None = None
    ) -> CatalogFetch:
        """Each file of the day's folder on its own, so one bad file costs only itself.

        The folder is the partition: every row of its files belongs to that day, and a row whose
        `activity_date` disagrees is returned (and errored by the activities stage), not
        filtered away into no partition at all.
        """
        import duckdb

        day = partition_date(partition_key)
        directory = Path(self.root).resolve() / catalog_partition_prefix(partition_key)
        files = sorted(directory.glob("*.parquet"))
        if not files:
            return CatalogFetch(CATALOG_SCHEMA.empty_table())
        source = "read_parquet(?, hive_partitioning = false)"
        query = activities_query(Dialect.DUCKDB, source, day, tenant_ids, whole_source=True)
        tables: list[pa.Table] = []
        issues: dict[int, list[str]] = {}
        file_errors: list[CatalogFileError] = []
        offset = 0
        connection = duckdb.connect(database=":memory:")
        try:
            for path in files:
                try:
                    raw = connection.sql(
                        query.sql, params=[str(path), *query.parameters]
                    ).to_arrow_table()
                    conformed = conform_catalog_table(raw)
                except (duckdb.Error, CatalogUnavailableError) as exc:
                    # Corrupt, empty or schema-less: the same bytes fail the same way on every
                    # retry, so this is reported as the file's own error, never retried.
                    log.warning(
                        "catalog_file_unreadable",
                        partition=partition_key,
                        file=path.name,
                        error=type(exc).__name__,
                        status="errored",
                    )
                    file_errors.append(CatalogFileError(path.name, str(exc).splitlines()[0][:500]))
                    continue
                tables.append(conformed.table)
                for number, names in conformed.row_issues.items():
                    issues[offset + number] = names
                offset += conformed.table.num_rows
        finally:
            connection.close()
        table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
        return CatalogFetch(table, issues, file_errors)
