"""The log schema and its redaction, tracing configuration, and EMF records, in isolation."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asr_assets.observability.logging import (
    REDACTED,
    SCHEMA_FIELDS,
    clear_sensitive_values,
    get_logger,
    in_current_context,
    register_sensitive_values,
    run_context,
)
from asr_assets.observability.metrics import (
    ActivityOutcome,
    Metric,
    MetricsSettings,
    emit,
    emit_activities,
)
from asr_assets.observability.tracing import (
    configure_tracing,
    reset_tracing,
    run_parent_context,
    run_trace_id,
    span,
    use_span_exporter,
)

log = get_logger("asr_assets.tests.observability")


def _events(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name.startswith("asr_assets")]


def test_records_have_the_schema_and_the_bound_context(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asr_assets")
    log.info("outside")
    with run_context(correlation_id="run-1", stage="transcripts"):
        log.debug("phrase_done", activity_id="a", phrase_index=2, status="ok", latency_ms=3)
    outside, inside = _events(caplog)
    for event in (outside, inside):
        assert all(name in event for name in SCHEMA_FIELDS)
        assert event["service"] == "asr-platform"
    assert outside["correlation_id"] is None and outside["stage"] is None
    assert (inside["correlation_id"], inside["stage"], inside["level"]) == (
        "run-1",
        "transcripts",
        "debug",
    )
    assert inside["latency_ms"] == 3.0 and isinstance(inside["latency_ms"], float)


def test_student_ids_are_dropped_and_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asr_assets")
    register_sensitive_values(["stu-4242-secret", "x"])  # too short to redact safely: ignored
    try:
        try:
            raise ValueError("row for stu-4242-secret is bad")
        except ValueError:
            log.error(
                "something_failed",
                student_id="stu-4242-secret",
                detail="student stu-4242-secret, path audio/stu-4242-secret/0.wav",
                row={"student_id": "stu-4242-secret", "nested": ["stu-4242-secret"]},
                StudentName="Ada",
                exc_info=True,
            )
    finally:
        clear_sensitive_values()
    (event,) = _events(caplog)
    assert "stu-4242-secret" not in caplog.text
    assert "student_id" not in event and "StudentName" not in event
    assert event["detail"] == f"student {REDACTED}, path audio/{REDACTED}/0.wav"
    assert event["row"] == {"nested": [REDACTED]}
    assert REDACTED in event["exception"] and "ValueError" in event["exception"]


def test_worker_threads_carry_the_context(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asr_assets")
    with run_context(correlation_id="run-2", stage="phrase_audio"):
        task = in_current_context(lambda i: log.info("worker", index=i))
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(task, range(6)))
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(lambda: log.info("unwrapped")).result()
    events = _events(caplog)
    workers = [e for e in events if e["event"] == "worker"]
    assert len(workers) == 6 and {e["correlation_id"] for e in workers} == {"run-2"}
    (unwrapped,) = [e for e in events if e["event"] == "unwrapped"]
    assert unwrapped["correlation_id"] is None  # why the stages wrap their tasks


def test_records_carry_the_active_span(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asr_assets")
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter)
    try:
        with span("outer", {"asr.count": 3, "asr.none": None, "asr.list": [1]}) as current:
            log.info("inside")
        log.info("after")
    finally:
        reset_tracing()
    inside, after = _events(caplog)
    context = current.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in after
    (finished,) = exporter.get_finished_spans()
    assert dict(finished.attributes) == {"asr.count": 3, "asr.list": "[1]"}


def test_a_failing_block_marks_its_span() -> None:
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter)
    try:
        with pytest.raises(RuntimeError), span("failing"):
            raise RuntimeError("boom")
    finally:
        reset_tracing()
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code.name == "ERROR"
    assert finished.events[0].name == "exception"


def test_a_run_is_one_trace_named_by_its_run_id() -> None:
    run_id = "0b6c2a4e-3f1d-4c5b-9a7e-1d2c3b4a5f60"
    assert format(run_trace_id(run_id) or 0, "032x") == run_id.replace("-", "")
    assert run_trace_id("not-a-uuid") is None and run_parent_context("not-a-uuid") is None
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter)
    try:
        for stage in ("a", "b"):
            with span(stage, context=run_parent_context(run_id)):
                pass
    finally:
        reset_tracing()
    spans = exporter.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in spans} == {run_id.replace("-", "")}


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_TRACES_EXPORTER": "zipkin-ish"}, None),
    ],
)
def test_tracing_follows_the_otel_variables(environ: dict, exporters: list | None) -> None:
    reset_tracing()
    try:
        provider = configure_tracing(environ, set_global=False)
        if exporters is None:
            assert provider is None
        else:
            assert provider is not None
            processors = provider._active_span_processor._span_processors
            assert [type(p.span_exporter) for p in processors] == exporters
            assert all(isinstance(p, SimpleSpanProcessor) for p in processors)
            assert provider.resource.attributes["service.name"] == "asr-platform"
    finally:
        reset_tracing()


def test_otlp_without_its_package_warns_and_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asr_assets")
    reset_tracing()
    try:
        try:
            import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        except ImportError:
            assert configure_tracing({"OTEL_TRACES_EXPORTER": "otlp"}, set_global=False) is None
            (warning,) = [
                e for e in _events(caplog) if e["event"] == "tracing_exporter_unavailable"
            ]
            assert "opentelemetry-exporter-otlp-proto-http" in warning["fix"]
        else:
            provider = configure_tracing({"OTEL_TRACES_EXPORTER": "otlp"}, set_global=False)
            assert provider is not None
    finally:
        reset_tracing()


LOCAL = MetricsSettings(environment="local", namespace="asr-test")


def test_metrics_are_off_unless_configured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_EMF_ENVIRONMENT", raising=False)
    assert MetricsSettings.from_environ().enabled is False
    assert emit([Metric("X", 1.0)], {"Service": "s"}) is False
    outcome = ActivityOutcome("a", phrases=1, phrases_errored=0, total_ms=1.0, align_failures=0)
    written = emit_activities(
        stage="letter_scores",
        partition="2026-11-27",
        correlation_id="run",
        model="m",
        device="cpu",
        activities=[outcome],
    )
    assert written == 0 and capsys.readouterr().out == ""
    monkeypatch.setenv("AWS_EMF_ENVIRONMENT", "Local")
    assert MetricsSettings.from_environ().environment == "local"


def test_emf_record_in_local_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert emit(
        [Metric("ActivitySuccess", 1.0), Metric("ActivityTotalMs", 12.5, "Milliseconds")],
        {"Service": "asr-platform", "Stage": "letter_scores", "Device": "cpu", "Model": "mé"},
        {"correlation_id": "run-9", "activity_id": "act-1", "skipped": None},
        settings=LOCAL,
    )
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "asr-test"
    assert directive["Dimensions"] == [["Service", "Stage", "Device", "Model"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "ActivitySuccess": "None",
        "ActivityTotalMs": "Milliseconds",
    }
    assert record["Model"] == "m?"  # EMF dimension values must be ASCII
    assert (record["correlation_id"], record["activity_id"]) == ("run-9", "act-1")
    assert "skipped" not in record and record["ActivitySuccess"] == 1.0


def test_a_bad_metric_is_a_warning_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asr_assets")
    assert emit([Metric("Bad", float("nan"))], {"Service": "s"}, settings=LOCAL) is False
    assert emit([Metric("X", 1.0)], {"Service": "s"}, settings=MetricsSettings("mars")) is False
    failures = [e for e in _events(caplog) if e["event"] == "metrics_emit_failed"]
    assert len(failures) == 2 and "AWS_EMF_ENVIRONMENT" in failures[1]["detail"]


def test_activity_success_is_all_or_nothing() -> None:
    assert (
        ActivityOutcome("a", phrases=3, phrases_errored=0, total_ms=1, align_failures=0).success
        == 1.0
    )
    assert (
        ActivityOutcome("a", phrases=3, phrases_errored=1, total_ms=1, align_failures=0).success
        == 0.0
    )
    assert (
        ActivityOutcome("a", phrases=0, phrases_errored=0, total_ms=0, align_failures=0).success
        == 0.0
    )


def test_progress_lines_are_throttled_but_keep_the_first_and_last() -> None:
    """One line per batch was one event-log write per batch; the bar needs a line every few
    seconds, the first and the last."""
    from asr_assets.assets.instrumentation import ProgressLog

    lines: list[dict[str, object]] = []

    class Recorder:
        def info(self, event: str, **fields: object) -> None:
            lines.append({"event": event, **fields})

    progress = ProgressLog(Recorder(), total=200, interval_s=3600)  # type: ignore[arg-type]
    for done in range(1, 201):
        progress.update(done)
    assert [line["phrases_done"] for line in lines] == [1, 200]
    assert lines[-1]["phrases_total"] == 200
    eager = ProgressLog(Recorder(), total=3, interval_s=0.0)  # type: ignore[arg-type]
    lines.clear()
    for done in (1, 2, 3):
        eager.update(done)
    assert [line["phrases_done"] for line in lines] == [1, 2, 3]
