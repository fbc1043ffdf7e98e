"""The one activity query, built for each catalog dialect with bound parameters.

Partition keys and tenant ids are data, so they are always bound, never formatted into SQL; the
only differences between DuckDB and Athena are spelled out here, in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

ACTIVITY_COLUMNS = (
    "activity_id",
    "tenant_id",
    "student_id",
    "activity_date",
    "phrase_index",
    "expected_text",
    "audio_key",
    "audio_start_s",
    "audio_end_s",
    "created_at",
)


# Database and table names come from configuration, not from data, but they are still checked:
# Athena (Trino) names are letters, digits, '_' and '-', which double quotes make safe.
_ATHENA_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$")


class UnsafeIdentifierError(ValueError):
    """A configured database or table name that could change the meaning of the SQL."""


class Dialect(StrEnum):
    DUCKDB = "duckdb"
    ATHENA = "athena"


@dataclass(frozen=True)
class Query:
    sql: str
    parameters: list[object]


def activities_query(
    dialect: Dialect, source: str, activity_date: date, tenant_ids: list[str] | None = None
) -> Query:
    """Phrases of one UTC day, optionally limited to some tenants, in a stable order.

    `source` is a table expression owned by the catalog resource (a Parquet scan for DuckDB, a
    `db.table` name for Athena), never user input.
    """
    columns = ", ".join(ACTIVITY_COLUMNS)
    if dialect is Dialect.DUCKDB:
        date_predicate, date_param = "activity_date = ?", activity_date
    else:
        # pyathena's default paramstyle is pyformat: its formatter renders each bound value as
        # an escaped literal (a date as DATE '...', a string with quotes doubled). Athena's own
        # ExecutionParameters (qmark) would need those literals written by hand, so it is not
        # safer. The mapping the placeholders read comes from `athena_parameters`.
        date_predicate, date_param = "activity_date = %(activity_date)s", activity_date
    where = [date_predicate]
    parameters: list[object] = [date_param]
    if tenant_ids:
        if dialect is Dialect.DUCKDB:
            where.append(f"tenant_id IN ({', '.join('?' for _ in tenant_ids)})")
        else:
            where.append(
                "tenant_id IN ("
                + ", ".join(f"%(tenant_{i})s" for i in range(len(tenant_ids)))
                + ")"
            )
        parameters.extend(tenant_ids)
    sql = (
        f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} "  # noqa: S608 - source is ours
        "ORDER BY activity_id, phrase_index"
    )
    return Query(sql=sql, parameters=parameters)


def athena_parameters(query: Query) -> dict[str, object]:
    """pyathena takes pyformat parameters as a mapping."""
    mapping: dict[str, object] = {"activity_date": query.parameters[0]}
    for index, tenant in enumerate(query.parameters[1:]):
        mapping[f"tenant_{index}"] = tenant
    return mapping


def athena_table_source(database: str, table: str) -> str:
    """The `source` of an Athena query: a double-quoted `"database"."table"`.

    Dialect difference: DuckDB's source is a Parquet scan taking a bound path, Athena's is a
    catalog table name, which cannot be bound and is therefore validated and quoted here.
    """
    for name in (database, table):
        if not _ATHENA_NAME.fullmatch(name):
            raise UnsafeIdentifierError(f"not a valid Athena identifier: {name!r}")
    return f'"{database}"."{table}"'
