"""One run of the whole graph, observed: log records, spans and EMF metrics.

The generated day is materialized once with DEBUG logs captured, OpenTelemetry's
`InMemorySpanExporter` as the span exporter and EMF in its `Local` (stdout) mode; the tests then
check the one log schema, that no student id reaches any record, the spans and their attributes,
the trace ids in log records, and the EMF records.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.observability.logging import OPTIONAL_FIELDS, SCHEMA_FIELDS
from asr_assets.observability.tracing import reset_tracing, use_span_exporter
from tests.support.data import standard_day

pytestmark = pytest.mark.e2e

DAY = "2026-11-27"
STAGES = [
    "activities",
    "phrase_audio",
    "transcripts",
    "alignments",
    "letter_scores",
    "published_scores",
]


@dataclass
class Observed:
    result: dg.ExecuteInProcessResult
    records: list[logging.LogRecord]
    events: list[dict[str, Any]]
    spans: list[Any]
    emf: list[dict[str, Any]]
    text: str


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    root = tmp_path_factory.mktemp("observed")
    standard_day(root, date.fromisoformat(DAY))
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter)
    logger = logging.getLogger("asr_assets")
    collector = _Collector()
    previous_level = logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.DEBUG)
    stdout = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_EMF_ENVIRONMENT", "Local")
            mp.setenv("AWS_EMF_NAMESPACE", "asr-test")
            definitions = build_definitions(
                {"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(tiny_model_dir)}
            )
            with dg.instance_for_test() as instance, contextlib.redirect_stdout(stdout):
                result = dg.materialize(
                    ALL_ASSETS,
                    partition_key=DAY,
                    resources=definitions.resources,
                    instance=instance,
                )
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous_level)
        spans = list(exporter.get_finished_spans())
        reset_tracing()
    assert result.success
    records = [r for r in collector.records if r.name.startswith("asr_assets")]
    events = [json.loads(r.getMessage()) for r in records]
    emf = []
    for line in stdout.getvalue().splitlines():
        if line.startswith("{") and '"_aws"' in line:
            emf.append(json.loads(line))
    text = "\n".join(r.getMessage() for r in records) + stdout.getvalue()
    return Observed(result, records, events, spans, emf, text)


def test_every_record_has_the_schema(observed: Observed) -> None:
    assert len(observed.events) > 20
    for event in observed.events:
        for name in SCHEMA_FIELDS:
            assert name in event, (name, event)
        assert event["service"] == "asr-platform"
        assert event["env"] == "local"
        assert event["level"] in {"debug", "info", "warning", "error"}
        if event.get("latency_ms") is not None:
            assert isinstance(event["latency_ms"], float)
        if event.get("phrase_index") is not None:
            assert isinstance(event["phrase_index"], int)
    in_stages = [e for e in observed.events if e["stage"] is not None]
    assert {e["stage"] for e in in_stages} == set(STAGES)
    assert {e["correlation_id"] for e in in_stages} == {observed.result.run_id}
    assert all(name in OPTIONAL_FIELDS for name in ("activity_id", "phrase_index", "status"))


def test_levels_policy(observed: Observed) -> None:
    by_event: dict[str, set[str]] = {}
    for event in observed.events:
        by_event.setdefault(event["event"], set()).add(event["level"])
    assert by_event["stage_started"] == {"info"} and by_event["stage_finished"] == {"info"}
    assert by_event["partition_finished"] == {"info"}
    for per_phrase in (
        "phrase_audio_ready",
        "phrase_rejected",
        "phrase_transcribed",
        "phrase_aligned",
    ):
        assert by_event[per_phrase] == {"debug"}, per_phrase
    assert not [e for e in observed.events if e["level"] == "error"]
    started = [e for e in observed.events if e["event"] == "stage_started"]
    finished = [e for e in observed.events if e["event"] == "stage_finished"]
    assert [e["stage"] for e in started] == STAGES == [e["stage"] for e in finished]
    assert all(e["status"] == "ok" and e["latency_ms"] > 0 for e in finished)
    phrase_records = [e for e in observed.events if e["event"] == "phrase_transcribed"]
    assert phrase_records and all(
        e["activity_id"] and isinstance(e["phrase_index"], int) for e in phrase_records
    )


def test_no_student_id_reaches_a_record(observed: Observed) -> None:
    assert "student-secret" not in observed.text
    assert not any("student" in key for event in observed.events for key in event)


def test_stage_and_batch_spans(observed: Observed) -> None:
    by_name: dict[str, list[Any]] = {}
    for span in observed.spans:
        by_name.setdefault(span.name, []).append(span)
    stages = {s.attributes["asr.stage"]: s for s in by_name["asr.stage"]}
    assert set(stages) == set(STAGES)
    assert all(
        s.attributes["asr.correlation_id"] == observed.result.run_id for s in stages.values()
    )
    partitions = {s.attributes["asr.stage"]: s for s in by_name["asr.partition"]}
    assert set(partitions) == set(STAGES)
    for stage, span in partitions.items():
        assert span.parent is not None and span.parent.span_id == stages[stage].context.span_id
        assert span.attributes["asr.partition"] == DAY
        assert span.attributes["asr.phrases_in"] == 10
    assert partitions["activities"].attributes["asr.activity_count"] == 3
    assert partitions["transcripts"].attributes["asr.device"] == "cpu"
    assert partitions["transcripts"].attributes["asr.model"] == "tiny-random@test"
    batches = by_name["asr.inference.batch"]
    assert sum(b.attributes["asr.batch_size"] for b in batches) == 5
    for batch in batches:
        assert batch.attributes["asr.engine"] == "local-onnx-int8"  # the default backend
        assert batch.attributes["asr.device"] == "cpu"
        assert batch.attributes["asr.model"] == "tiny-random"
        assert batch.attributes["asr.activity_count"] >= 1
    (commit,) = by_name["asr.commit"]
    assert commit.attributes["asr.key_count"] >= 4 and commit.attributes["asr.store"] == "local"
    # One trace per run, whatever process each step ran in: its id is the run id.
    assert {format(s.context.trace_id, "032x") for s in observed.spans} == {
        observed.result.run_id.replace("-", "")
    }


def test_log_records_carry_the_active_trace(observed: Observed) -> None:
    traces = {format(s.context.trace_id, "032x") for s in observed.spans}
    spans = {format(s.context.span_id, "016x") for s in observed.spans}
    traced = [e for e in observed.events if e["stage"] is not None]
    assert traced and all(e["trace_id"] in traces and e["span_id"] in spans for e in traced)


def _metrics(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def test_emf_records(observed: Observed) -> None:
    assert observed.emf
    base, rollup = ["Service", "Stage", "Device", "Model"], ["Service", "Stage"]
    for record in observed.emf:
        (directive,) = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "asr-test"
        metrics = _metrics(record)
        if "PhrasesIn" in metrics:  # the stage record, also on the SLO roll-up
            assert directive["Dimensions"] == [base, rollup]
        elif metrics == {"PhrasesErroredByReason"}:
            assert directive["Dimensions"] == [["Service", "Stage", "ReasonCode"]]
        elif metrics & {"QueueAgeS", "PartitionFreshnessS"}:
            assert directive["Dimensions"] == [rollup]
        else:
            assert directive["Dimensions"] == [base]
        assert record["Service"] == "asr-platform"
        assert record["correlation_id"] == observed.result.run_id
    stage_records = [r for r in observed.emf if "PhrasesIn" in _metrics(r)]
    assert {r["Stage"] for r in stage_records} == set(STAGES)
    transcripts = next(r for r in stage_records if r["Stage"] == "transcripts")
    assert transcripts["PhrasesIn"] == 10 and transcripts["PhrasesErrored"] == 5
    assert transcripts["Device"] == "cpu" and transcripts["Model"] == "tiny-random@test"
    assert transcripts["Retries"] == 0 and transcripts["StageMs"] > 0
    by_reason = {
        (r["Stage"], r["ReasonCode"]): r["PhrasesErroredByReason"]
        for r in observed.emf
        if "PhrasesErroredByReason" in _metrics(r)
    }
    assert sum(v for (stage, _), v in by_reason.items() if stage == "transcripts") == 5
    assert {name for r in observed.emf for name in _metrics(r)} >= {
        "QueueAgeS",
        "PartitionFreshnessS",
    }
    engines = [r for r in observed.emf if _metrics(r) == {"Phrases"} and "engine" in r]
    assert {(r["Device"], r["Phrases"]) for r in engines} == {("local-onnx-int8", 5)}
    activities = {r["activity_id"]: r for r in observed.emf if "ActivitySuccess" in _metrics(r)}
    assert sorted(activities) == ["act-1", "act-2", "act-3"]
    assert activities["act-1"]["ActivitySuccess"] == 1.0
    assert activities["act-3"]["ActivitySuccess"] == 0.0  # all five of its phrases errored
    assert activities["act-1"]["ActivityTotalMs"] > 0
    assert all("AlignFailure" in _metrics(r) for r in activities.values())
    assert all(r["Stage"] == "letter_scores" for r in activities.values())
