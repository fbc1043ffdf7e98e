"""CloudWatch metrics as embedded-metric-format (EMF) records; off unless configured.

Why EMF: one JSON line per record that CloudWatch turns into metrics (from Lambda/container
stdout, or through the CloudWatch agent), with no metrics API calls from the run and no extra
service to run. The record carries dimensions for aggregation and properties for drilling into
one run (`correlation_id` = the Dagster run id) or one activity.

Configuration, read at each emission (never at import):
- `AWS_EMF_ENVIRONMENT`: unset (default) = metrics off. `Local` writes each record as a line on
  stdout (tests, a developer's terminal); `Lambda` also writes to stdout; `Agent`, `EC2` or
  `ECS` send to the CloudWatch agent at `AWS_EMF_AGENT_ENDPOINT` (default `tcp://127.0.0.1:25888`).
- `AWS_EMF_NAMESPACE` (default `asr-platform`); `AWS_EMF_LOG_GROUP_NAME`,
  `AWS_EMF_LOG_STREAM_NAME` for the agent (read by aws-embedded-metrics itself).

Records and their dimensions (Service, Stage, Device, Model):
- per stage and partition: `PhrasesIn`, `PhrasesOk`, `PhrasesErrored`, `StageMs`, `Retries`
  (and `Retries<Dependency>` per dependency that needed any);
- per engine in `transcripts`: `Phrases` with Device = the engine that scored them (torch/onnx on
  the CPU, triton, or cache);
- per activity, when its partition is committed: `ActivitySuccess` (1.0 when every phrase was
  scored, else 0.0), `ActivityTotalMs` (inference + alignment time of its phrases),
  `AlignFailure` (phrases whose forced alignment could not run or failed), `Phrases`,
  `PhrasesErrored`; properties `activity_id` and `partition`.
- per stage failure: `StageFailed`, `StageFailedMs` with dimension `ReasonCode`;
- per stage and reason code: `PhrasesErroredByReason` (dimensions Service, Stage, ReasonCode);
- `QueueAgeS` (first stage: run start - run creation) and `PartitionFreshnessS` (publish time -
  end of the partition's day), the SLO signals of asr_assets/slo.yaml.
The stage record is also published on the {Service, Stage} roll-up the SLO alarms read.
Student ids are never dimensions or properties.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asr_assets.observability.logging import SERVICE, get_logger

log = get_logger(__name__)

DEFAULT_NAMESPACE = "asr-platform"
_STDOUT_ENVIRONMENTS = frozenset({"local", "lambda"})
_AGENT_ENVIRONMENTS = frozenset({"agent", "ec2", "ecs", "default"})
_environments: dict[str, Any] = {}
_environments_lock = threading.Lock()


@dataclass(frozen=True)
class MetricsSettings:
    environment: str | None
    namespace: str = DEFAULT_NAMESPACE

    @property
    def enabled(self) -> bool:
        return self.environment is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> MetricsSettings:
        env = os.environ if environ is None else environ
        chosen = (env.get("AWS_EMF_ENVIRONMENT") or "").strip().lower() or None
        namespace = (env.get("AWS_EMF_NAMESPACE") or "").strip() or DEFAULT_NAMESPACE
        return cls(environment=chosen, namespace=namespace)


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str = "None"


@dataclass(frozen=True)
class ActivityOutcome:
    """What one activity's committed rows say, for its metrics record."""

    activity_id: str
    phrases: int
    phrases_errored: int
    total_ms: float
    align_failures: int

    @property
    def success(self) -> float:
        return 1.0 if self.phrases and not self.phrases_errored else 0.0


def _dimension(value: object) -> str:
    """EMF dimension values must be non-empty ASCII of at most 1,024 characters."""
    text = str(value or "").encode("ascii", "replace").decode().strip()[:1024]
    return text or "none"


def _environment(name: str) -> Any:
    """The aws-embedded-metrics environment (and so sink) for a configured name, built once."""
    with _environments_lock:
        environment = _environments.get(name)
        if environment is None:
            if name in _STDOUT_ENVIRONMENTS:
                from aws_embedded_metrics.environment.local_environment import LocalEnvironment

                environment = LocalEnvironment()
            elif name in _AGENT_ENVIRONMENTS:
                from aws_embedded_metrics.environment.default_environment import (
                    DefaultEnvironment,
                )

                environment = DefaultEnvironment()
            else:
                raise ValueError(
                    f"AWS_EMF_ENVIRONMENT={name!r} is not one of Local, Lambda, Agent, EC2, ECS"
                )
            _environments[name] = environment
        return environment


def emit(
    metrics: Sequence[Metric],
    dimensions: Mapping[str, object],
    properties: Mapping[str, object] | None = None,
    *,
    settings: MetricsSettings | None = None,
    rollups: Sequence[Sequence[str]] = (),
) -> bool:
    """Write one EMF record; False (and nothing written) when metrics are off.

    `rollups` adds dimension sets made of some of the record's dimensions (CloudWatch stores
    the metric once per set): the SLO alarms read {Service, Stage} whatever the device or model.

    Metrics are observations, not results: a failure to write one is logged at WARNING and never
    fails the stage that produced it.
    """
    chosen = settings or MetricsSettings.from_environ()
    if not chosen.enabled or not metrics:
        return False
    from aws_embedded_metrics.exceptions import (
        DimensionSetExceededError,
        InvalidDimensionError,
        InvalidMetricError,
        InvalidNamespaceError,
    )

    try:
        from aws_embedded_metrics.logger.metrics_context import MetricsContext

        environment = _environment(str(chosen.environment))
        context = MetricsContext.empty()
        context.namespace = chosen.namespace
        full = {k: _dimension(v) for k, v in dimensions.items()}
        context.set_dimensions(
            [full, *({name: full[name] for name in names if name in full} for names in rollups)]
        )
        for metric in metrics:
            context.put_metric(metric.name, float(metric.value), metric.unit)
        for key, value in (properties or {}).items():
            if value is not None:
                context.set_property(key, value)
        environment.configure_context(context)
        environment.get_sink().accept(context)
    except (
        ValueError,
        OSError,
        DimensionSetExceededError,
        InvalidDimensionError,
        InvalidMetricError,
        InvalidNamespaceError,
    ) as exc:
        log.warning("metrics_emit_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return False
    return True


def _base_dimensions(stage: str, device: str | None, model: str | None) -> dict[str, object]:
    return {"Service": SERVICE, "Stage": stage, "Device": device, "Model": model}


#: The dimension set SLO alarms read (asr_assets/slo.yaml, deploy/monitoring/).
SLO_ROLLUP = ("Service", "Stage")


def emit_stage(
    *,
    stage: str,
    partition: str,
    correlation_id: str | None,
    phrases_in: int,
    phrases_ok: int,
    phrases_errored: int,
    latency_ms: float,
    retries: Mapping[str, int],
    device: str | None = None,
    model: str | None = None,
    phrases_by_engine: Mapping[str, int] | None = None,
    errors_by_reason: Mapping[str, int] | None = None,
) -> None:
    """The stage's record, one `PhrasesErroredByReason` record per reason code, and one
    `Phrases` record per engine when the stage ran inference."""
    properties = {"correlation_id": correlation_id, "partition": partition}
    metrics = [
        Metric("PhrasesIn", phrases_in, "Count"),
        Metric("PhrasesOk", phrases_ok, "Count"),
        Metric("PhrasesErrored", phrases_errored, "Count"),
        Metric("StageMs", round(latency_ms, 3), "Milliseconds"),
        Metric("Retries", sum(retries.values()), "Count"),
        *(
            Metric(f"Retries{dependency.capitalize()}", count, "Count")
            for dependency, count in sorted(retries.items())
            if count
        ),
    ]
    emit(metrics, _base_dimensions(stage, device, model), properties, rollups=[SLO_ROLLUP])
    for reason, count in sorted((errors_by_reason or {}).items()):
        # Per reason code, as a stage failure reports its own: what broke, not only how much.
        emit(
            [Metric("PhrasesErroredByReason", count, "Count")],
            {"Service": SERVICE, "Stage": stage, "ReasonCode": reason},
            properties,
        )
    for engine, count in sorted((phrases_by_engine or {}).items()):
        emit(
            [Metric("Phrases", count, "Count")],
            _base_dimensions(stage, engine, model),
            {**properties, "engine": engine},
        )


def emit_stage_failure(
    *,
    stage: str,
    correlation_id: str | None,
    partitions: Sequence[str],
    reason: str,
    retryable: bool | None,
    latency_ms: float,
) -> bool:
    """A stage that failed reports itself like one that succeeded, with the reason as a
    dimension (`StageFailed` = 1, `StageFailedMs`); its duration stays out of `StageMs`, whose
    percentiles are the latency SLO."""
    return emit(
        [
            Metric("StageFailed", 1.0, "Count"),
            Metric("StageFailedMs", round(latency_ms, 3), "Milliseconds"),
        ],
        {"Service": SERVICE, "Stage": stage, "ReasonCode": reason},
        {
            "correlation_id": correlation_id,
            "partitions": ",".join(partitions),
            "retryable": retryable,
        },
        rollups=[SLO_ROLLUP],
    )


def emit_slo_signal(
    name: str, value_s: float, *, stage: str, partition: str, correlation_id: str | None
) -> bool:
    """A freshness or queue-age observation in seconds, on the SLO roll-up dimensions."""
    return emit(
        [Metric(name, round(value_s, 3), "Seconds")],
        {"Service": SERVICE, "Stage": stage},
        {"correlation_id": correlation_id, "partition": partition},
    )


def emit_activities(
    *,
    stage: str,
    partition: str,
    correlation_id: str | None,
    model: str | None,
    device: str | None,
    activities: Sequence[ActivityOutcome],
) -> int:
    """One record per activity; returns how many were written (0 when metrics are off)."""
    settings = MetricsSettings.from_environ()
    if not settings.enabled:
        return 0
    written = 0
    for activity in activities:
        written += emit(
            [
                Metric("ActivitySuccess", activity.success),
                Metric("ActivityTotalMs", round(activity.total_ms, 3), "Milliseconds"),
                Metric("AlignFailure", activity.align_failures, "Count"),
                Metric("Phrases", activity.phrases, "Count"),
                Metric("PhrasesErrored", activity.phrases_errored, "Count"),
            ],
            _base_dimensions(stage, device, model),
            {
                "correlation_id": correlation_id,
                "partition": partition,
                "activity_id": activity.activity_id,
            },
            settings=settings,
        )
    return written
