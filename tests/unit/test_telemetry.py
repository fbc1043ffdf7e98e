"""Telemetry completeness: resource attributes, sampled DEBUG logs, Triton client spans with
trace propagation, and the dependency-latency histogram."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asr_assets.definitions import EnvironmentConfigError, build_definitions
from asr_assets.inference.triton import TritonProtocol, TritonSettings, _Transport
from asr_assets.observability.logging import get_logger, run_context, set_log_sampling_rate
from asr_assets.observability.otel_metrics import configure_metrics, reset_metrics
from asr_assets.observability.tracing import (
    reset_tracing,
    resource_attributes,
    span,
    use_span_exporter,
)

log = get_logger("asr_assets.tests.telemetry")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.setenv("ASR_ENV", "aws")
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter)
    yield exporter
    reset_tracing()


def test_spans_carry_service_version_and_deployment_environment(
    spans: InMemorySpanExporter,
) -> None:
    with span("asr.test"):
        pass
    (finished,) = spans.get_finished_spans()
    attributes = dict(finished.resource.attributes)
    assert attributes["service.name"] == "asr-platform"
    assert attributes["service.version"] not in ("", None)
    assert attributes["deployment.environment"] == "aws"
    assert attributes["deployment.environment.name"] == "aws"
    assert resource_attributes({"ASR_ENV": "local"})["deployment.environment"] == "local"


def _debug_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "asr_assets.tests.telemetry" and r.levelno == logging.DEBUG
    ]


def test_debug_logs_are_sampled_per_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asr_assets")
    try:
        set_log_sampling_rate(0.5)
        for run in range(200):
            with run_context(correlation_id=f"run-{run}"):
                log.debug("phrase_scored", n=1)
                log.debug("phrase_scored", n=2)
                log.info("stage_finished")
        kept = _debug_lines(caplog)
        runs = {line["correlation_id"] for line in kept}
        assert 60 < len(runs) < 140  # about half of the runs
        assert len(kept) == 2 * len(runs)  # a sampled run keeps all its DEBUG records
        infos = [
            r
            for r in caplog.records
            if r.levelno == logging.INFO and "stage_finished" in r.getMessage()
        ]
        assert len(infos) == 200  # INFO is never sampled
        caplog.clear()
        set_log_sampling_rate(0.0)
        log.debug("dropped")
        assert _debug_lines(caplog) == []
    finally:
        set_log_sampling_rate(1.0)
    log.debug("kept")
    assert len(_debug_lines(caplog)) == 1


def test_sampling_rate_comes_from_the_environment_and_is_validated() -> None:
    try:
        build_definitions({"ASR_LOG_SAMPLING_RATE": "0.25"})
        with pytest.raises(EnvironmentConfigError):
            build_definitions({"ASR_LOG_SAMPLING_RATE": "2"})
    finally:
        set_log_sampling_rate(1.0)


class _RecordingClient:
    """Stands in for tritonclient's client: records the call, answers one emissions batch."""

    def __init__(self) -> None:
        self.headers: dict[str, str] | None = None

    def infer(self, model: str, inputs: Any, **kwargs: Any) -> Any:
        self.headers = kwargs.get("headers")

        class Result:
            def as_numpy(self, name: str) -> np.ndarray:
                return np.zeros((1, 2, 3), np.float32) if "log" in name else np.array([2])

        return Result()

    def close(self) -> None:
        return


def test_triton_calls_are_client_spans_that_propagate_the_trace(
    spans: InMemorySpanExporter,
) -> None:
    reader = InMemoryMetricReader()
    configure_metrics({}, reader=reader)
    try:
        settings = TritonSettings(
            url="127.0.0.1:1", model_name="letters", protocol=TritonProtocol.GRPC
        )
        transport = _Transport(settings, timeout_s=1.0)
        client = _RecordingClient()
        transport._client = client
        with span("asr.stage") as parent:
            transport.infer(np.zeros((1, 16000), np.float32), np.array([16000]))
        infer = next(s for s in spans.get_finished_spans() if s.name == "triton.infer")
        assert (
            infer.parent is not None and infer.parent.span_id == parent.get_span_context().span_id
        )
        assert infer.attributes["asr.triton.model"] == "letters"
        assert infer.attributes["rpc.system"] == "grpc"
        assert infer.attributes["asr.batch_size"] == 1
        trace_id = format(infer.context.trace_id, "032x")
        assert client.headers is not None and trace_id in client.headers["traceparent"]
        data = reader.get_metrics_data()
        points = [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "asr.dependency.duration"
            for point in metric.data.data_points
        ]
        assert [p.attributes["asr.dependency"] for p in points] == ["triton"]
        assert points[0].count == 1 and points[0].attributes["asr.outcome"] == "ok"
    finally:
        reset_metrics()


def test_otel_metrics_are_off_unless_configured() -> None:
    try:
        assert configure_metrics({}) is None
    finally:
        reset_metrics()
