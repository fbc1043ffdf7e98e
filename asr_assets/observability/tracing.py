"""OpenTelemetry spans around stages, inference batches and dependency calls; off by default.

Configured only by the standard OpenTelemetry variables, read when the first span starts (never
at import):
- `OTEL_TRACES_EXPORTER`: `none` (default: tracing off, spans cost a no-op), `console` (one JSON
  document per span on stdout: handy in a terminal or `dagster dev`), `otlp` (OTLP over HTTP to
  `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, through
  `opentelemetry-exporter-otlp-proto-http`; should that package be missing from an image, a
  WARNING says so and tracing stays off). A comma-separated list combines them.
- `OTEL_SDK_DISABLED=true` switches tracing off whatever the exporter says.
- `OTEL_SERVICE_NAME` (default `asr-platform`), `OTEL_RESOURCE_ATTRIBUTES` describe the process;
  `service.version` (the installed package's) and `deployment.environment` (`ASR_ENV`) are set
  on the resource too. With tracing on, botocore (S3, Athena), httpx (AppSync) and requests are
  instrumented: every call is a client span under the stage's span.
  the SDK's own `OTEL_BSP_*` variables tune the batch processor of the OTLP exporter.

When tracing is on, our provider also becomes the global one (if no one set it first), so any
instrumented library shares it; the log schema carries the active span's `trace_id`/`span_id`
(see `observability/logging.py`). Tests swap in an in-memory exporter with `use_span_exporter`.

One run, one trace: Dagster may run each step in its own process (or pod), so no span can be
handed from one stage to the next. Instead every stage span of a run is started under the same
remote parent whose trace id *is* the run id (a UUID is 128 bits, like a trace id): a run's
stages share one trace, and the trace of a run is found from its run id alone.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from asr_assets.observability.logging import SERVICE, current_environment, get_logger

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = get_logger(__name__)

TRACER_NAME = "asr_assets"
AttributeValue = str | bool | int | float

_lock = threading.Lock()
_configured = False
_provider: TracerProvider | None = None
_instrumented: list[Any] = []


def _exporters(names: list[str]) -> list[tuple[SpanExporter, bool]]:
    """(exporter, batched) per configured name; unknown or unavailable ones are logged."""
    chosen: list[tuple[SpanExporter, bool]] = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            chosen.append((ConsoleSpanExporter(), False))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning(
                    "tracing_exporter_unavailable",
                    exporter="otlp",
                    status="disabled",
                    fix="install opentelemetry-exporter-otlp-proto-http matching opentelemetry-sdk",
                )
                continue
            chosen.append((OTLPSpanExporter(), True))
        elif name != "none":
            log.warning("tracing_exporter_unknown", exporter=name, status="ignored")
    return chosen


def configure_tracing(
    environ: Mapping[str, str] | None = None, *, set_global: bool = True
) -> TracerProvider | None:
    """Build the provider the OTEL_* variables ask for (once per process); None when off.

    `set_global` also makes it OpenTelemetry's global provider, unless one was set already.
    """
    global _configured, _provider
    with _lock:
        if _configured:
            return _provider
        _configured = True
        env = os.environ if environ is None else environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",") if n]
        exporters = _exporters(names)
        if not exporters:
            return None
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create(resource_attributes(env))
        provider = TracerProvider(resource=resource)
        for exporter, batched in exporters:
            processor = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
            provider.add_span_processor(processor)
        _provider = provider
        if set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        instrumented = instrument_libraries(provider)
        log.info("tracing_configured", exporters=names, instrumented=instrumented, status="on")
        return provider


def service_version() -> str:
    """The installed distribution's version (the image's), else `unknown`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asr-platform")
    except PackageNotFoundError:
        return "unknown"


def resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """What every span says about its process; OTEL_RESOURCE_ATTRIBUTES still wins (the SDK
    merges it over these)."""
    environment = (env.get("ASR_ENV") or current_environment() or "local").strip().lower()
    return {
        "service.name": env.get("OTEL_SERVICE_NAME") or SERVICE,
        "service.version": service_version(),
        # Both spellings: semantic conventions renamed it; backends read one or the other.
        "deployment.environment": environment,
        "deployment.environment.name": environment,
    }


#: Client libraries whose calls become spans when tracing is on: S3, Athena and KMS through
#: botocore; AppSync through httpx; anything on requests. Optional: a missing one is skipped.
_INSTRUMENTORS = (
    ("botocore", "opentelemetry.instrumentation.botocore", "BotocoreInstrumentor"),
    ("httpx", "opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ("requests", "opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
)


def instrument_libraries(provider: TracerProvider) -> list[str]:
    """Instrument the client libraries with `provider` (once per process); returns their names."""
    import importlib

    done = []
    for name, module_name, class_name in _INSTRUMENTORS:
        try:
            instrumentor = getattr(importlib.import_module(module_name), class_name)()
        except ImportError:
            log.warning("tracing_instrumentation_unavailable", library=name, status="skipped")
            continue
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
            _instrumented.append(instrumentor)
        done.append(name)
    return done


def uninstrument_libraries() -> None:
    """Undo `instrument_libraries` (the instrumentors hold the provider they were given)."""
    while _instrumented:
        _instrumented.pop().uninstrument()


def use_span_exporter(exporter: SpanExporter) -> TracerProvider:
    """Send this process's spans to `exporter` only (tests: `InMemorySpanExporter`)."""
    global _configured, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create(resource_attributes(os.environ)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with _lock:
        _provider = provider
        _configured = True
    return provider


def reset_tracing() -> None:
    """Forget the configuration; the next span reads the environment again (tests)."""
    global _configured, _provider
    with _lock:
        provider, _provider, _configured = _provider, None, False
    uninstrument_libraries()
    if provider is not None:
        provider.shutdown()


def tracer() -> Tracer:
    """Our provider's tracer when tracing is on, else the global (no-op unless set) one."""
    provider = configure_tracing() if not _configured else _provider
    if provider is not None:
        return provider.get_tracer(TRACER_NAME)
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME)


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """OpenTelemetry accepts str, bool, int and float: drop None, stringify anything else."""
    cleaned: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        cleaned[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return cleaned


def run_trace_id(run_id: str) -> int | None:
    """The trace id of a run: its UUID's 128 bits; None when the run id is not a UUID."""
    try:
        value = uuid.UUID(run_id).int
    except ValueError:
        return None
    return value or None


def run_parent_context(run_id: str) -> Context | None:
    """A context whose (remote, never exported) parent span puts children in the run's trace."""
    trace_id = run_trace_id(run_id)
    if trace_id is None:
        return None
    from opentelemetry import trace

    span_id = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big") or 1
    parent = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )
    return trace.set_span_in_context(parent)


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, context: Context | None = None
) -> Iterator[Span]:
    """A span that is the current one inside the block; an escaping exception is recorded on it
    and sets its status to ERROR before propagating. `context` gives it an explicit parent."""
    with tracer().start_as_current_span(
        name,
        context=context,
        attributes=clean_attributes(attributes),
        record_exception=True,
        set_status_on_exception=True,
    ) as current:
        yield current
