"""Alert definitions generated from `asr_assets/slo.yaml`: CloudWatch alarms and Prometheus rules.

Pipeline SLOs read the EMF metrics the stages emit (CloudWatch); Triton and GPU SLOs read the
metrics Triton itself exports (Prometheus). Each burn-rate alert of the spec becomes two window
alarms (long, short) and one composite alarm that fires when both do.

Threshold SLOs need no metric math: "more than B x (1 - target) of the events are over the
threshold" is exactly "the (1 - B x (1 - target)) percentile is over the threshold", so each
window alarm is one percentile statistic compared with the threshold.

`python -m asr_assets.observability.slo_rules` rewrites the committed files; `--check` exits 1
when they differ from what the spec generates (the drift test runs the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from asr_assets.core.slo import BurnRateAlert, Slo, SloSpec, load_spec, parse_window

OUTPUT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
CLOUDWATCH_FILE = "cloudwatch-alarms.json"
PROMETHEUS_FILE = "prometheus-rules.yaml"
_MS_METRICS = frozenset({"StageMs"})


def _alarm_name(spec: SloSpec, slo: Slo, alert: BurnRateAlert, window: str) -> str:
    return f"{spec.service}-slo-{slo.name}-burn{alert.burn_rate:g}x-{window}"


def _dimensions(spec: SloSpec, slo: Slo) -> list[dict[str, str]]:
    # The stages emit a {Service, Stage} roll-up dimension set for exactly these alarms.
    values = {"Service": spec.service, **(slo.cloudwatch.dimensions if slo.cloudwatch else {})}
    return [{"Name": k, "Value": v} for k, v in sorted(values.items())]


def _window_alarm(
    spec: SloSpec, slo: Slo, alert: BurnRateAlert, window: str
) -> dict[str, Any] | None:
    source = slo.cloudwatch
    assert source is not None
    period = int(parse_window(window).total_seconds())
    allowed = alert.burn_rate * slo.error_budget
    common: dict[str, Any] = {
        "AlarmName": _alarm_name(spec, slo, alert, window),
        "AlarmDescription": (
            f"{slo.description} Burn rate above {alert.burn_rate:g}x over {window}. "
            f"Runbook: {slo.runbook}"
        ),
        "ActionsEnabled": False,  # the composite alarm notifies, not the window alarms
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "Tags": [{"Key": "slo", "Value": slo.name}, {"Key": "severity", "Value": alert.severity}],
    }
    if source.latency:
        if allowed >= 1.0:
            return None  # every event may miss: this window cannot tell anything
        percentile = round(100.0 * (1.0 - allowed), 2)
        scale = 1000.0 if source.latency in _MS_METRICS else 1.0
        return {
            **common,
            "Namespace": spec.namespace,
            "MetricName": source.latency,
            "Dimensions": _dimensions(spec, slo),
            "ExtendedStatistic": f"p{percentile:g}",
            "Period": period,
            "Threshold": float(slo.threshold_s or 0.0) * scale,
        }

    def stat(metric_id: str, name: str) -> dict[str, Any]:
        return {
            "Id": metric_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": spec.namespace,
                    "MetricName": name,
                    "Dimensions": _dimensions(spec, slo),
                },
                "Period": period,
                "Stat": "Sum",
            },
            "ReturnData": False,
        }

    assert source.good and source.total
    return {
        **common,
        "Metrics": [
            stat("good", source.good),
            stat("total", source.total),
            {
                "Id": "error_ratio",
                "Expression": "IF(total > 0, 1 - good / total, 0)",
                "Label": f"{slo.name} error ratio",
                "ReturnData": True,
            },
        ],
        "Threshold": round(allowed, 6),
    }


def cloudwatch_alarms(spec: SloSpec) -> dict[str, list[dict[str, Any]]]:
    """PutMetricAlarm and PutCompositeAlarm request bodies (boto3 keyword arguments)."""
    metric_alarms: list[dict[str, Any]] = []
    composites: list[dict[str, Any]] = []
    for slo in spec.slos:
        if slo.cloudwatch is None:
            continue
        for alert in spec.burn_rate_alerts:
            windows = [alert.long_window, alert.short_window]
            alarms = [_window_alarm(spec, slo, alert, window) for window in windows]
            if any(alarm is None for alarm in alarms):
                continue
            metric_alarms.extend(a for a in alarms if a is not None)
            rule = " AND ".join(f'ALARM("{a["AlarmName"]}")' for a in alarms if a is not None)
            composites.append(
                {
                    "AlarmName": f"{spec.service}-slo-{slo.name}-{alert.severity}-"
                    f"{alert.long_window}",
                    "AlarmDescription": f"{alert.severity.upper()}: {slo.description} "
                    f"Error budget burning above {alert.burn_rate:g}x "
                    f"({alert.long_window} and {alert.short_window}). Runbook: {slo.runbook}",
                    "AlarmRule": rule,
                    "ActionsEnabled": True,
                    "Tags": [
                        {"Key": "slo", "Value": slo.name},
                        {"Key": "severity", "Value": alert.severity},
                    ],
                }
            )
    return {"metric_alarms": metric_alarms, "composite_alarms": composites}


def prometheus_rules(spec: SloSpec) -> dict[str, Any]:
    """Recording rules for each window's error ratio, and the burn-rate alerts over them."""
    groups = []
    for slo in spec.slos:
        if slo.prometheus is None:
            continue
        windows = sorted(
            {w for a in spec.burn_rate_alerts for w in (a.long_window, a.short_window)},
            key=parse_window,
        )
        record = [
            {
                "record": f"slo:{slo.name}:error_ratio_{w}",
                "expr": slo.prometheus.error_ratio.replace("{window}", w),
            }
            for w in windows
        ]
        alerts = [
            {
                "alert": f"SLO_{slo.name}_burn_{a.long_window}",
                "expr": (
                    f"slo:{slo.name}:error_ratio_{a.long_window} > "
                    f"({a.burn_rate:g} * {slo.error_budget:.6g}) and "
                    f"slo:{slo.name}:error_ratio_{a.short_window} > "
                    f"({a.burn_rate:g} * {slo.error_budget:.6g})"
                ),
                "labels": {"severity": a.severity, "slo": slo.name, "service": spec.service},
                "annotations": {
                    "summary": f"{slo.description} Burning above {a.burn_rate:g}x "
                    f"({a.long_window} and {a.short_window}).",
                    "runbook": slo.runbook,
                },
            }
            for a in spec.burn_rate_alerts
        ]
        groups.append({"name": f"slo-{slo.name}", "rules": [*record, *alerts]})
    return {"groups": groups}


HEADER = (
    "# Generated from asr_assets/slo.yaml by asr_assets/observability/slo_rules.py: do not edit.\n"
)


def render(spec: SloSpec) -> dict[str, str]:
    return {
        CLOUDWATCH_FILE: json.dumps(cloudwatch_alarms(spec), indent=2, sort_keys=True) + "\n",
        PROMETHEUS_FILE: HEADER + yaml.safe_dump(prometheus_rules(spec), sort_keys=False),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the files drifted")
    args = parser.parse_args(argv)
    drifted = []
    for name, text in render(load_spec()).items():
        path = OUTPUT_DIR / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                drifted.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if drifted:
        sys.stderr.write(f"out of date with slo.yaml: {', '.join(drifted)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
