"""The Athena catalog through pyathena against a real moto server (canned query results)."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from pyathena.error import OperationalError

from asr_assets.core.sql import UnsafeIdentifierError
from asr_assets.core.tables import CATALOG_SCHEMA
from asr_assets.resources.athena import (
    AthenaActivityCatalog,
    AthenaQueryTimeoutError,
    is_retryable_athena_error,
)
from asr_assets.resources.catalog import CatalogUnavailableError
from tests.support.data import standard_day
from tests.support.moto_server import (  # noqa: F401
    REGION,
    MotoServer,
    athena_result,
    aws_env,
    moto,
    s3_client,
)

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 27)
RESULTS_BUCKET = "athena-results"


@pytest.fixture
def catalog(aws_env: MotoServer) -> AthenaActivityCatalog:  # noqa: F811
    s3_client(aws_env.endpoint).create_bucket(Bucket=RESULTS_BUCKET)
    return AthenaActivityCatalog(
        database="asr",
        table="activities",
        output_location=f"s3://{RESULTS_BUCKET}/queries/",
        region_name=REGION,
        endpoint_url=aws_env.endpoint,
        poll_interval_s=0.01,
        query_timeout_s=10,
    )


@pytest.fixture(scope="module")
def day_rows(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("day")
    standard_day(root, DAY)
    return pq.read_table(
        root / "catalog" / "activities" / f"activity_date={DAY}" / "part-0.parquet"
    )


def _executed_queries(aws_env: MotoServer) -> list[str]:  # noqa: F811
    import boto3

    client = boto3.client("athena", endpoint_url=aws_env.endpoint, region_name=REGION)
    ids = client.list_query_executions()["QueryExecutionIds"]
    return [client.get_query_execution(QueryExecutionId=i)["QueryExecution"]["Query"] for i in ids]


def test_returns_the_partition_in_the_catalog_contract(
    catalog: AthenaActivityCatalog,
    aws_env: MotoServer,  # noqa: F811
    day_rows,
) -> None:
    aws_env.queue_athena_results([athena_result(day_rows)])
    table = catalog.fetch_activities(DAY.isoformat())
    assert table.schema == CATALOG_SCHEMA
    assert table.num_rows == day_rows.num_rows == 10
    rows = table.to_pylist()
    assert rows[0]["activity_id"] == "act-1" and rows[0]["activity_date"] == DAY
    assert rows[0]["created_at"] == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    segment = next(r for r in rows if (r["activity_id"], r["phrase_index"]) == ("act-2", 1))
    assert (segment["audio_start_s"], segment["audio_end_s"]) == (1.5, 3.0)
    assert rows[0]["audio_start_s"] is None  # NULL stays NULL, not NaN
    (query,) = _executed_queries(aws_env)
    assert 'FROM "asr"."activities" WHERE activity_date = DATE \'2026-11-27\'' in query


def test_tenant_ids_are_bound_not_formatted(
    catalog: AthenaActivityCatalog,
    aws_env: MotoServer,  # noqa: F811
    day_rows,
) -> None:
    aws_env.queue_athena_results([athena_result(day_rows.slice(0, 0))])
    table = catalog.fetch_activities(DAY.isoformat(), ["tenant-a", "x' OR '1'='1"])
    assert table.num_rows == 0 and table.schema == CATALOG_SCHEMA
    (query,) = _executed_queries(aws_env)
    # pyathena renders the bound value as one escaped literal: the quote cannot close it.
    assert "tenant_id IN ('tenant-a', 'x'' OR ''1''=''1')" in query


def test_a_query_past_its_timeout_is_cancelled_and_not_retried(
    catalog: AthenaActivityCatalog,
    aws_env: MotoServer,  # noqa: F811
) -> None:
    import boto3

    slow = catalog.model_copy(update={"query_timeout_s": 0.2})
    aws_env.hold_athena_queries(polls=10_000)
    try:
        with pytest.raises(AthenaQueryTimeoutError, match=r"longer than 0\.2s"):
            slow.fetch_activities(DAY.isoformat())
    finally:
        aws_env.release_athena_queries()
    client = boto3.client("athena", endpoint_url=aws_env.endpoint, region_name=REGION)
    (query_id,) = client.list_query_executions()["QueryExecutionIds"]  # one attempt only
    state = client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
    assert state["State"] == "CANCELLED"


def test_an_unreachable_athena_is_catalog_unavailable(aws_env: MotoServer) -> None:  # noqa: F811
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = AthenaActivityCatalog(
        database="asr",
        output_location="s3://athena-results/q/",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        poll_interval_s=0.01,
    )
    with pytest.raises(CatalogUnavailableError, match=r"DatabaseError\(EndpointConnectionError\)"):
        dead.fetch_activities(DAY.isoformat())
    assert "Athena is unreachable" in (dead.unavailable_reason() or "")


def test_the_probe_reports_the_workgroup(catalog: AthenaActivityCatalog) -> None:
    assert catalog.unavailable_reason() is None
    missing = catalog.model_copy(update={"workgroup": "no-such-workgroup"})
    assert missing.unavailable_reason() == "Athena workgroup 'no-such-workgroup' was not found"


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="endpoint override"):
        AthenaActivityCatalog(database="asr", endpoint_url="http://x", result_format="arrow")
    hostile = AthenaActivityCatalog(database='asr"; DROP TABLE x; --', output_location="s3://b/")
    with pytest.raises(UnsafeIdentifierError):
        hostile.fetch_activities(DAY.isoformat())


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "StartQueryExecution",
    )


def _wrapped(cause: BaseException) -> OperationalError:
    try:
        raise OperationalError("wrapped") from cause
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (_client_error("ThrottlingException", 400), True),
        (_wrapped(_client_error("TooManyRequestsException", 400)), True),
        (_wrapped(_client_error("InternalServerException", 500)), True),
        (
            OperationalError(
                "HIVE_CANNOT_OPEN_SPLIT: ... SlowDown: Please reduce your request rate"
            ),
            True,
        ),
        (OperationalError("SYNTAX_ERROR: line 1:8: Column 'x' cannot be resolved"), False),
        (_wrapped(_client_error("InvalidRequestException", 400)), False),
        (AthenaQueryTimeoutError("slow"), False),
    ],
)
def test_retryable_athena_errors(error: BaseException, retryable: bool) -> None:
    assert is_retryable_athena_error(error) is retryable


def test_throttled_start_is_retried(catalog: AthenaActivityCatalog, aws_env, day_rows) -> None:  # noqa: F811
    """A ThrottlingException on StartQueryExecution: our Athena policy retries the query."""
    from pyathena import connect as real_connect

    attempts = {"n": 0}

    def throttle_once(*_: object, **__: object) -> None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise _client_error("ThrottlingException", 400)

    def connect(**kwargs: object):
        connection = real_connect(**kwargs)
        connection.client.meta.events.register(
            "before-call.athena.StartQueryExecution", throttle_once
        )
        return connection

    aws_env.queue_athena_results([athena_result(day_rows)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pyathena.connect", connect)
        assert catalog.fetch_activities(DAY.isoformat()).num_rows == 10
    assert attempts["n"] == 2


def test_module_imports_no_aws_sdk_at_import_time(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import asr_assets.resources.athena, asr_assets.resources.s3, sys; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
