"""SLOs as code: the spec, the SLI/budget/burn-rate arithmetic, the generated alert definitions
(no drift from slo.yaml, valid CloudWatch requests), and the metrics failed stages emit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import botocore.session
import dagster as dg
import pytest
from botocore.validate import ParamValidator

from asr_assets.assets.common import ReconciliationError
from asr_assets.assets.instrumentation import failure_reason, partition_freshness_s, stage_scope
from asr_assets.core.errors import PhraseError, ReasonCode, Stage
from asr_assets.core.slo import (
    SliEvent,
    budget_remaining,
    burn_rate,
    daily_sli,
    evaluate,
    firing,
    load_spec,
    parse_window,
    threshold_events,
)
from asr_assets.observability import slo_rules
from asr_assets.observability.metrics import emit_stage

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_the_spec_names_every_signal_the_issue_asks_for_with_a_runbook() -> None:
    spec = load_spec()
    kinds = {slo.sli.value for slo in spec.slos}
    assert kinds == {
        "phrase_success",
        "partition_freshness",
        "stage_latency",
        "queue_age",
        "triton_availability",
        "gpu_utilization",
    }
    assert spec.report_windows == ["1h", "6h", "3d"]
    for slo in spec.slos:
        assert (ROOT / slo.runbook).is_file(), slo.runbook
        assert (slo.cloudwatch is None) != (slo.prometheus is None), slo.name


def test_burn_rate_budget_and_daily_sli() -> None:
    slo = next(s for s in load_spec().slos if s.name == "phrase_success_rate")  # target 0.98
    events = [
        SliEvent(NOW - timedelta(days=2), 98, 100),  # on budget
        SliEvent(NOW - timedelta(minutes=20), 80, 100),  # 20% errors: 10x the budget
    ]
    assert burn_rate(slo, events, NOW, parse_window("1h")) == pytest.approx(10.0)
    assert burn_rate(slo, events, NOW, parse_window("3d")) == pytest.approx(5.5)
    assert burn_rate(slo, [], NOW, parse_window("1h")) is None
    assert budget_remaining(slo, events, NOW) == pytest.approx(1 - 0.11 / 0.02)
    assert daily_sli(events) == {
        (NOW - timedelta(days=2)).date(): pytest.approx(0.98),
        NOW.date(): pytest.approx(0.8),
    }
    status = evaluate(slo, events, NOW, ["1h", "6h", "3d"], "test")
    assert status.burn_rates["6h"] == pytest.approx(10.0)
    # 10x over 1h: below the 14.4x page, above the 6x page only if 30m agrees (it does).
    assert firing(load_spec(), slo, events, NOW) == ["page:6h", "ticket:3d"]


def test_threshold_objectives_are_event_ratios() -> None:
    samples = [(NOW, 10.0), (NOW, 700.0), (NOW, 599.0)]
    assert [e.good for e in threshold_events(samples, 600.0)] == [1.0, 0.0, 1.0]
    day_end = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    assert partition_freshness_s("2026-11-27", day_end + 3600) == 3600


def test_generated_alert_files_do_not_drift_from_slo_yaml() -> None:
    rendered = slo_rules.render(load_spec())
    for name, text in rendered.items():
        assert (slo_rules.OUTPUT_DIR / name).read_text() == text, (
            f"{name} is stale: run python -m asr_assets.observability.slo_rules"
        )
    assert slo_rules.main(["--check"]) == 0


def test_cloudwatch_alarms_are_valid_requests_and_encode_the_burn_rates() -> None:
    alarms = slo_rules.cloudwatch_alarms(load_spec())
    model = botocore.session.get_session().get_service_model("cloudwatch")
    validator = ParamValidator()
    for operation, key in (
        ("PutMetricAlarm", "metric_alarms"),
        ("PutCompositeAlarm", "composite_alarms"),
    ):
        shape = model.operation_model(operation).input_shape
        for alarm in alarms[key]:
            report = validator.validate(alarm, shape)
            assert not report.has_errors(), report.generate_report()
    by_name = {a["AlarmName"]: a for a in alarms["metric_alarms"]}
    names = set(by_name)
    for composite in alarms["composite_alarms"]:
        referenced = composite["AlarmRule"].split('"')[1::2]
        assert len(referenced) == 2 and set(referenced) <= names
    # p95 latency at 1x burn over 3 days; 6x burn of a 5% budget is the 70th percentile.
    latency_3d = by_name["asr-platform-slo-transcripts_latency-burn1x-3d"]
    assert latency_3d["ExtendedStatistic"] == "p95" and latency_3d["Threshold"] == 1_800_000
    assert latency_3d["Period"] == 3 * 86400
    assert by_name["asr-platform-slo-queue_age-burn6x-6h"]["ExtendedStatistic"] == "p70"
    success = by_name["asr-platform-slo-phrase_success_rate-burn14.4x-1h"]
    assert success["Threshold"] == pytest.approx(14.4 * 0.02)
    assert {"Name": "Stage", "Value": "letter_scores"} in success["Metrics"][0]["MetricStat"][
        "Metric"
    ]["Dimensions"]


def test_prometheus_rules_cover_triton_and_gpu() -> None:
    rules = slo_rules.prometheus_rules(load_spec())
    assert [g["name"] for g in rules["groups"]] == [
        "slo-triton_availability",
        "slo-gpu_utilization",
    ]
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == 6 and all(a["annotations"]["runbook"] for a in alerts)
    assert "{window}" not in json.dumps(rules)


def _emf_records(out: str) -> list[dict]:
    return [
        json.loads(line) for line in out.splitlines() if line.startswith("{") and "_aws" in line
    ]


def test_successful_stages_emit_the_slo_rollup_and_errors_by_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EMF_ENVIRONMENT", "Local")
    emit_stage(
        stage="phrase_audio",
        partition="2026-11-27",
        correlation_id="run-1",
        phrases_in=5,
        phrases_ok=3,
        phrases_errored=2,
        latency_ms=12.0,
        retries={},
        errors_by_reason={"audio_silent": 1, "audio_empty": 1},
    )
    records = _emf_records(capsys.readouterr().out)
    stage_record = records[0]
    assert stage_record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["Service", "Stage", "Device", "Model"],
        ["Service", "Stage"],
    ]
    by_reason = {r["ReasonCode"]: r["PhrasesErroredByReason"] for r in records[1:]}
    assert by_reason == {"audio_empty": 1.0, "audio_silent": 1.0}


def test_a_failed_stage_emits_a_metric_with_its_reason_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EMF_ENVIRONMENT", "Local")

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"))
    def broken(context) -> None:  # type: ignore[no-untyped-def]
        with stage_scope(context, Stage.ALIGNMENTS):
            raise ReconciliationError("lost a phrase")

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [broken], instance=instance, raise_on_error=False, partition_key="2026-11-27"
        )
    assert not result.success
    records = [r for r in _emf_records(capsys.readouterr().out) if "StageFailed" in r]
    assert len(records) == 1
    record = records[0]
    assert (record["Stage"], record["ReasonCode"]) == ("alignments", "reconciliation_error")
    assert record["StageFailed"] == 1.0 and record["retryable"] is False
    assert ["Service", "Stage", "ReasonCode"] in record["_aws"]["CloudWatchMetrics"][0][
        "Dimensions"
    ]


def test_failure_reason_prefers_the_phrase_reason_code() -> None:
    assert failure_reason(PhraseError(ReasonCode.AUDIO_MISSING, "x")) == "audio_missing"
    wrapped = dg.Failure("x")
    wrapped.__cause__ = OSError("disk")
    assert failure_reason(wrapped) == "o_s_error"
    assert failure_reason(None) == "unknown"
