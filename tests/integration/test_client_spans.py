"""With tracing on, S3 (botocore) and AppSync (httpx) calls are client spans under the stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asr_assets.observability.tracing import (
    instrument_libraries,
    reset_tracing,
    span,
    use_span_exporter,
)
from asr_assets.resources.publisher import AppSyncPublisher
from asr_assets.resources.s3 import S3ObjectStore
from tests.integration.test_appsync_publisher import API_KEY, DAY, _records
from tests.support.graphql_server import running_appsync
from tests.support.moto_server import MotoServer, aws_env, moto, s3_client  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    reset_tracing()  # whatever an earlier test configured, instrumentation included
    exporter = InMemorySpanExporter()
    provider = use_span_exporter(exporter)
    assert instrument_libraries(provider) == ["botocore", "httpx", "requests"]
    yield exporter
    reset_tracing()  # also uninstruments the libraries


def test_s3_and_appsync_calls_are_client_spans(
    traced: InMemorySpanExporter,
    aws_env: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    s3_client(aws_env.endpoint).create_bucket(Bucket="traced")
    store = S3ObjectStore(
        bucket="traced", endpoint_url=aws_env.endpoint, cache_dir=str(tmp_path), min_free_bytes=0
    )
    with running_appsync(api_key=API_KEY) as (url, _), span("asr.stage") as stage:
        store.write_bytes("a/b.txt", b"x")
        assert store.read_bytes("a/b.txt") == b"x"
        AppSyncPublisher(url=url, api_key=API_KEY).publish(DAY, _records(1))
    finished = traced.get_finished_spans()
    stage_id = stage.get_span_context().span_id
    names = {s.name for s in finished}
    assert {"S3.PutObject", "S3.GetObject"} <= names
    s3_put = next(s for s in finished if s.name == "S3.PutObject")
    assert s3_put.attributes["rpc.service"] == "S3"
    http = [s for s in finished if s.name.startswith("POST")]
    assert http, names
    by_id = {s.context.span_id: s for s in finished}

    def under_stage(s: object) -> bool:
        parent = s.parent  # type: ignore[attr-defined]
        while parent is not None:
            if parent.span_id == stage_id:
                return True
            parent = by_id[parent.span_id].parent if parent.span_id in by_id else None
        return False

    assert under_stage(s3_put) and all(under_stage(s) for s in http)
