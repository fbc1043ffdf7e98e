"""The Athena activity catalog (aws environment): pyathena behind the `ActivityCatalog` interface.

The query is the DuckDB catalog's, built by `core/sql.py` for the Athena dialect: the partition
date and tenant ids are bound parameters (pyathena's pyformat formatter renders them as escaped
literals), the table name is validated configuration.

Retries are ours, at the level where the fault happened (pyathena's own API retries and
botocore's are switched off):
- each request pyathena makes (StartQueryExecution, every status poll, the result download from
  S3) is retried on its own under the Athena policy of `reliability/retry.py`, inside botocore's
  request loop (`reliability/aws_hooks.py`, installed on the boto3 session pyathena uses), and
  takes a token from the Athena rate limit first. A throttled poll costs one poll, not a re-run
  (and re-billing) of the query;
- the whole query is retried only when it failed for a transient reason that no single request
  could cure: Athena reports the query FAILED with an overload reason (`SlowDown`, internal
  error), or an error reached us that the per-request layer never saw.
A query that runs past `query_timeout_s` is cancelled in Athena (so it stops costing money) and
reported as `CatalogUnavailableError`, not retried: a slow query will be as slow the next time.

Results come back as Arrow (`conform_catalog_table` casts them to the data contract) through one
of two pyathena cursors:
- `pandas` (default): pyathena downloads the result CSV with a boto3 S3 client, which honours the
  standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` environment variables (but not the
  connection's `endpoint_url`, which pyathena applies to the Athena client only).
- `arrow`: pyarrow's own S3 filesystem reads the CSV; faster on large results, but pyathena 4.2.1
  gives it no endpoint override at all, so it is refused together with an endpoint override.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from asr_assets.core.sql import Dialect, activities_query, athena_parameters, athena_table_source
from asr_assets.core.storage import partition_date
from asr_assets.observability.logging import get_logger
from asr_assets.observability.tracing import span
from asr_assets.reliability.aws_hooks import install_request_policy, retries_exhausted
from asr_assets.reliability.retry import Dependency, retrying
from asr_assets.resources.catalog import (
    ActivityCatalog,
    CatalogFetch,
    CatalogUnavailableError,
    conform_catalog_table,
)
from asr_assets.resources.s3 import (
    RETRYABLE_ERROR_CODES,
    aws_client,
    error_code,
    http_status,
    is_transport_error,
)

log = get_logger(__name__)

# Words in a FAILED query's reason that mean Athena or S3 was overloaded, not that the SQL is
# wrong. Athena reports these only as text (pyathena drops the error category).
_TRANSIENT_FAILURE_MARKERS = (
    "SlowDown",
    "Please reduce your request rate",
    "ThrottlingException",
    "Rate exceeded",
    "ServiceUnavailable",
    "Service Unavailable",
    "INTERNAL_ERROR",
    "InternalError",
)


_SESSIONS: dict[str | None, Any] = {}
# boto3 sessions are not thread-safe; pyathena builds its clients from ours inside `connect`.
_SESSION_LOCK = threading.Lock()


def athena_session(region_name: str | None) -> Any:
    """The process's boto3 session for Athena, with our per-request policy installed once.

    Every client pyathena builds from it (Athena, and S3 for the result download) inherits the
    retry and rate-limit handlers.
    """
    import boto3

    session = _SESSIONS.get(region_name)
    if session is None:
        session = boto3.session.Session(region_name=region_name)
        install_request_policy(session.events, Dependency.ATHENA, is_retryable_athena_error)
        _SESSIONS[region_name] = session
    return session


class AthenaQueryTimeoutError(CatalogUnavailableError):
    """The query ran longer than `query_timeout_s` and was cancelled."""


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and its chain: pyathena wraps botocore errors in OperationalError."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe_error(exc: BaseException) -> str:
    """The error and the AWS error under it, e.g. `DatabaseError(ThrottlingException)`."""
    from botocore.exceptions import BotoCoreError, ClientError

    for cause in _causes(exc)[1:]:
        if isinstance(cause, BotoCoreError | ClientError):
            return f"{type(exc).__name__}({error_code(cause) or type(cause).__name__})"
    return type(exc).__name__


def is_retryable_athena_error(exc: BaseException) -> bool:
    """Throttling, 5xx, dropped connections and overload failures; never our own timeout."""
    if isinstance(exc, AthenaQueryTimeoutError):
        return False
    for error in _causes(exc):
        if is_transport_error(error):
            return True
        status = http_status(error)
        if error_code(error) in RETRYABLE_ERROR_CODES or status == 429 or (status or 0) >= 500:
            return True
    from pyathena.error import OperationalError

    return isinstance(exc, OperationalError) and any(
        marker in str(exc) for marker in _TRANSIENT_FAILURE_MARKERS
    )


def is_retryable_query_error(exc: BaseException) -> bool:
    """Worth re-running the whole query: transient, and not already retried request by request."""
    return is_retryable_athena_error(exc) and not any(retries_exhausted(e) for e in _causes(exc))


class AthenaActivityCatalog(ActivityCatalog):
    """One partition's phrases from an Athena table in the catalog data contract.

    The table must have the contract's columns with `activity_date` of type DATE (a `date`
    partition column or projection), so the bound DATE literal prunes partitions.
    """

    database: str = Field(description="Glue/Athena database (ASR_ATHENA_DATABASE).")
    table: str = Field(default="activities", description="Table of phrases (ASR_ATHENA_TABLE).")
    workgroup: str = Field(default="primary", description="Athena workgroup.")
    output_location: str | None = Field(
        default=None,
        description="s3:// prefix for query results; None when the workgroup enforces one.",
    )
    region_name: str | None = Field(default=None, description="None: boto3's default chain.")
    endpoint_url: str | None = Field(
        default=None, description="Athena endpoint override (VPC endpoint, moto)."
    )
    query_timeout_s: float = Field(default=300.0, gt=0, description="Cancel queries after this.")
    poll_interval_s: float = Field(default=1.0, gt=0, description="Seconds between status polls.")
    result_format: Literal["pandas", "arrow"] = Field(
        default="pandas", description="pyathena cursor that reads the results (see module doc)."
    )
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _arrow_cannot_follow_an_endpoint_override(self) -> AthenaActivityCatalog:
        if self.result_format == "arrow" and self.endpoint_url:
            raise ValueError(
                "result_format='arrow' reads results through pyarrow's S3 filesystem, which "
                "pyathena 4.2.1 cannot point at an endpoint override; use 'pandas'"
            )
        return self

    def _botocore_config(self) -> Any:
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )

    def _connect(self) -> Any:
        from pyathena import connect
        from pyathena.util import RetryConfig

        if self.result_format == "arrow":
            from pyathena.arrow.cursor import ArrowCursor as cursor_class
        else:
            from pyathena.pandas.cursor import PandasCursor as cursor_class
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        with _SESSION_LOCK:
            return connect(
                s3_staging_dir=self.output_location or "",
                work_group=self.workgroup,
                schema_name=self.database,
                region_name=self.region_name,
                session=athena_session(self.region_name),
                poll_interval=self.poll_interval_s,
                cursor_class=cursor_class,
                retry_config=RetryConfig(attempt=1),  # ours are the only retry layers
                config=self._botocore_config(),
                kill_on_interrupt=True,
                **options,
            )

    def _run_query(self, sql: str, parameters: Mapping[str, object]) -> pa.Table:
        """One attempt: start, poll until done or past the timeout, read the result."""
        connection = self._connect()
        query_ids: list[str] = []
        deadline = time.monotonic() + self.query_timeout_s

        def on_poll(_execution: object) -> None:
            if time.monotonic() > deadline:
                raise AthenaQueryTimeoutError(
                    f"Athena query ran longer than {self.query_timeout_s:g}s and was cancelled"
                )

        try:
            cursor = connection.cursor(on_poll=on_poll)
            try:
                cursor.execute(sql, dict(parameters), on_start_query_execution=query_ids.append)
            except AthenaQueryTimeoutError:
                self._cancel(connection, query_ids)
                raise
            if self.result_format == "arrow":
                return cursor.as_arrow()
            return pa.Table.from_pandas(cursor.as_pandas(), preserve_index=False)
        finally:
            connection.close()

    def _cancel(self, connection: Any, query_ids: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for query_id in query_ids:
            try:
                connection.client.stop_query_execution(QueryExecutionId=query_id)
            except (BotoCoreError, ClientError) as exc:
                # The timeout is what the caller must hear about; a failed cancel is logged.
                log.warning("athena_cancel_failed", query_id=query_id, error=type(exc).__name__)

    def describe_location(self, partition_key: str) -> str:
        return f"athena {self.database}.{self.table} where activity_date = {partition_key}"

    def fetch_activities(self, partition_key: str, tenant_ids: list[str] | None = None) -> pa.Table:
        return self.fetch_activity_rows(partition_key, tenant_ids).table

    def fetch_activity_rows(
        self, partition_key: str, tenant_ids: list[str] | None = None
    ) -> CatalogFetch:
        from botocore.exceptions import BotoCoreError, ClientError
        from pyathena.error import Error as PyAthenaError

        day = partition_date(partition_key)
        query = activities_query(
            Dialect.ATHENA, athena_table_source(self.database, self.table), day, tenant_ids
        )
        started = time.perf_counter()
        try:
            with span(
                "athena.query",
                {
                    "db.system": "athena",
                    "db.namespace": self.database,
                    "asr.athena.workgroup": self.workgroup,
                    "asr.partition": partition_key,
                },
            ) as query_span:
                table = retrying(Dependency.ATHENA, is_retryable_query_error)(
                    self._run_query, query.sql, athena_parameters(query)
                )
                query_span.set_attribute("asr.rows", table.num_rows)
        except CatalogUnavailableError:
            raise
        except (PyAthenaError, BotoCoreError, ClientError) as exc:
            log.warning(
                "athena_query_failed",
                partition=partition_key,
                workgroup=self.workgroup,
                error=describe_error(exc),
            )
            raise CatalogUnavailableError(
                f"Athena query on {self.database}.{self.table} failed: {describe_error(exc)}: "
                f"{str(exc)[:500]}"
            ) from exc
        log.info(
            "athena_query_finished",
            partition=partition_key,
            rows=table.num_rows,
            status="ok",
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return conform_catalog_table(table)

    def unavailable_reason(self) -> str | None:
        """One GetWorkGroup call, not retried: a probe, and the next sensor tick is the retry."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = aws_client(
                "athena",
                self.region_name,
                endpoint_url=self.endpoint_url,
                config=self._botocore_config(),
            )
            response = client.get_work_group(WorkGroup=self.workgroup)
        except (BotoCoreError, ClientError) as exc:
            code = error_code(exc) or type(exc).__name__
            return f"Athena is unreachable (GetWorkGroup {self.workgroup!r}: {code})"
        state = response.get("WorkGroup", {}).get("State")
        if state is None:
            return f"Athena workgroup {self.workgroup!r} was not found"
        if state != "ENABLED":
            return f"Athena workgroup {self.workgroup!r} is {state}"
        return None
