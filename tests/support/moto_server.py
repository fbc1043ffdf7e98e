"""A real moto server (S3 + Athena) on 127.0.0.1 for the aws-environment tests.

The server runs in this process (`ThreadedMotoServer`, a werkzeug HTTP server on a free port), so
stopping it is a plain `shutdown()` that pytest's fixture teardown always reaches; nothing is left
behind in another process. Clients talk to it over HTTP exactly as to AWS. The environment gets
dummy credentials and `AWS_ENDPOINT_URL`, and every other source of credentials is switched off,
so a test can never reach a real AWS account.

Import the fixtures into a test module: `from tests.support.moto_server import aws_env, moto`.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"

# Dummy credentials and no other credential source: boto3 must never find a real account.
AWS_TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    # Fast retries: the policy is the production one, only its delays are shortened.
    "ASR_RETRY_S3_ATTEMPTS": "3",
    "ASR_RETRY_S3_INITIAL_S": "0.01",
    "ASR_RETRY_S3_MAX_S": "0.05",
    "ASR_RETRY_ATHENA_ATTEMPTS": "2",
    "ASR_RETRY_ATHENA_INITIAL_S": "0.01",
    "ASR_RETRY_ATHENA_MAX_S": "0.05",
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_ATHENA")


@dataclass
class MotoServer:
    endpoint: str
    _server: Any

    def _post(self, path: str, payload: Mapping[str, object] | None = None) -> int:
        request = urllib.request.Request(
            f"{self.endpoint}{path}",
            data=json.dumps(payload or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)

    def reset(self) -> None:
        """Forget every bucket, object, query and canned result."""
        self._post("/moto-api/reset")

    def queue_athena_results(self, results: Sequence[Mapping[str, object]]) -> None:
        """Canned results, consumed one per StartQueryExecution, in order."""
        status = self._post(
            "/moto-api/static/athena/query-results",
            {"account_id": ACCOUNT, "region": REGION, "results": list(results)},
        )
        assert status == 201

    def put_objects(self, bucket: str, keys: Sequence[str], body: bytes = b"1") -> None:
        """Seed many objects straight into the server's S3 backend (setup only; the code under
        test still talks HTTP). Thousands of PutObject requests would cost seconds each test."""
        from moto.s3.models import s3_backends

        backend = s3_backends[ACCOUNT]["aws"]
        for key in keys:
            backend.put_object(bucket, key, body)

    def hold_athena_queries(self, polls: int) -> None:
        """Keep new query executions QUEUED for `polls` status requests (timeouts)."""
        self._post(
            "/moto-api/state-manager/set-transition",
            {
                "model_name": "athena::execution",
                "transition": {"progression": "manual", "times": polls},
            },
        )

    def release_athena_queries(self) -> None:
        self._post("/moto-api/state-manager/unset-transition", {"model_name": "athena::execution"})


@contextmanager
def running_moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoServer(endpoint=f"http://{host}:{port}", _server=server)
    finally:
        server.stop()


@contextmanager
def aws_test_environment(mp: pytest.MonkeyPatch, endpoint: str) -> Iterator[None]:
    """Dummy credentials and `AWS_ENDPOINT_URL` (which pyathena's result download follows)."""
    for name in _UNSET:
        mp.delenv(name, raising=False)
    for name, value in AWS_TEST_ENVIRONMENT.items():
        mp.setenv(name, value)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    yield


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with running_moto_server() as server:
        yield server


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A clean moto and an environment pointing at it, for one test."""
    moto.reset()
    with aws_test_environment(monkeypatch, moto.endpoint):
        yield moto


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def upload_tree(client: Any, bucket: str, root: Path, prefix: str = "") -> list[str]:
    """Upload every file under `root` (e.g. a generated day's audio) with the same layout."""
    keys = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(root).as_posix()
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


_ATHENA_TYPES = {
    pa.string(): "varchar",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.float64(): "double",
    pa.date32(): "date",
}


def _athena_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    return _ATHENA_TYPES[arrow_type]


def _athena_text(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]  # Athena's CSV timestamp format
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def athena_result(table: pa.Table) -> dict[str, object]:
    """A canned Athena result as GetQueryResults returns it: a header row, then the rows."""
    column_info = [
        {
            "CatalogName": "hive",
            "SchemaName": "",
            "TableName": "",
            "Name": field.name,
            "Label": field.name,
            "Type": _athena_type(field.type),
            "Precision": 0,
            "Scale": 0,
            "Nullable": "NULLABLE",
            "CaseSensitive": pa.types.is_string(field.type),
        }
        for field in table.schema
    ]
    header = {"Data": [{"VarCharValue": name} for name in table.column_names]}
    rows = [
        {
            "Data": [
                {} if row[name] is None else {"VarCharValue": _athena_text(row[name])}
                for name in table.column_names
            ]
        }
        for row in table.to_pylist()
    ]
    return {"rows": [header, *rows], "column_info": column_info}
