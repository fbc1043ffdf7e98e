"""OpenTelemetry metrics for what EMF does not carry: per-request dependency latency.

EMF records describe stages and activities (observability/metrics.py); these describe single
calls to the dependencies, which only a histogram summarizes well: `asr.dependency.duration`
(seconds; attributes `asr.dependency` = triton | s3, `asr.operation`, `asr.outcome`). Nothing
here repeats an EMF metric.

Off unless `OTEL_METRICS_EXPORTER` is `console` or `otlp` (read on first use, never at import);
the OTLP exporter honours the standard `OTEL_EXPORTER_OTLP_*` variables.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from time import perf_counter
from typing import TYPE_CHECKING, Any

from asr_assets.observability.logging import get_logger

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

log = get_logger(__name__)

_lock = threading.Lock()
_configured = False
_histogram: Histogram | None = None
_provider: MeterProvider | None = None


def _reader(name: str) -> MetricReader | None:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    return None


def configure_metrics(
    environ: Mapping[str, str] | None = None, reader: MetricReader | None = None
) -> MeterProvider | None:
    """Build the meter provider once per process; `reader` replaces the exporter (tests)."""
    global _configured, _histogram, _provider
    with _lock:
        if _configured and reader is None:
            return _provider
        _configured = True
        env = os.environ if environ is None else environ
        chosen = reader or _reader(env.get("OTEL_METRICS_EXPORTER", "none").strip().lower())
        if chosen is None:
            _provider = _histogram = None
            return None
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        from asr_assets.observability.tracing import resource_attributes

        _provider = MeterProvider(
            metric_readers=[chosen], resource=Resource.create(resource_attributes(env))
        )
        _histogram = _provider.get_meter("asr_assets").create_histogram(
            "asr.dependency.duration",
            unit="s",
            description="Duration of one call to a dependency (Triton, S3).",
        )
        log.info("otel_metrics_configured", status="on")
        return _provider


def reset_metrics() -> None:
    global _configured, _histogram, _provider
    with _lock:
        provider, _provider, _histogram, _configured = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


@contextmanager
def dependency_call(dependency: str, operation: str, **attributes: Any) -> Iterator[None]:
    """Time one dependency call into the histogram (a no-op when metrics are off)."""
    if not _configured:
        configure_metrics()
    histogram = _histogram
    if histogram is None:
        yield
        return
    started = perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        histogram.record(
            perf_counter() - started,
            {
                "asr.dependency": dependency,
                "asr.operation": operation,
                "asr.outcome": outcome,
                **{k: str(v) for k, v in attributes.items()},
            },
        )
