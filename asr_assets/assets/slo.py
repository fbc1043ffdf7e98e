"""`slo_report`: the SLIs of asr_assets/slo.yaml per day, error budgets and burn rates.

The events come from the Dagster instance's run history: materialization metadata of the
stages (phrases in / ok, phrases by engine), step timings, run queue times and publish times.
GPU utilization has no run-history source: it is measured from Triton's Prometheus metrics
(deploy/monitoring/prometheus-rules.yaml) and the report says so instead of inventing a number.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg

from asr_assets.assets.common import markdown_table
from asr_assets.assets.instrumentation import partition_freshness_s
from asr_assets.core.errors import Stage
from asr_assets.core.slo import (
    SliEvent,
    SliKind,
    Slo,
    SloSpec,
    SloStatus,
    evaluate,
    firing,
    load_spec,
    threshold_events,
)
from asr_assets.resources.inference import InferenceResource, TritonInferenceResource

MAX_RECORDS = 5000  # per stage and report: 28 days of hourly runs with room to spare


def _value(metadata: dict[str, dg.MetadataValue], name: str) -> object:
    entry = metadata.get(name)
    return None if entry is None else entry.value


def _materializations(
    instance: dg.DagsterInstance, stage: str, since: datetime
) -> Iterable[tuple[datetime, str | None, dict[str, dg.MetadataValue]]]:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), after_timestamp=since.timestamp()),
        limit=MAX_RECORDS,
    )
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        yield (
            datetime.fromtimestamp(record.timestamp, tz=UTC),
            materialization.partition,
            dict(materialization.metadata),
        )


def _step_durations(
    instance: dg.DagsterInstance, stage: str, since: datetime
) -> list[tuple[datetime, float]]:
    samples = []
    runs = instance.get_run_records(dg.RunsFilter(created_after=since), limit=MAX_RECORDS)
    for run in runs:
        for step in instance.get_run_step_stats(run.dagster_run.run_id, step_keys=[stage]):
            succeeded = step.status is not None and step.status.value == "SUCCESS"
            if step.end_time and step.start_time and succeeded:
                ended = datetime.fromtimestamp(step.end_time, tz=UTC)
                samples.append((ended, step.end_time - step.start_time))
    return samples


def _queue_ages(
    instance: dg.DagsterInstance, since: datetime, now: datetime
) -> list[tuple[datetime, float]]:
    """Started runs: start - creation; runs still waiting count at their age now."""
    samples = []
    for run in instance.get_run_records(dg.RunsFilter(created_after=since), limit=MAX_RECORDS):
        created = run.create_timestamp.timestamp()
        if run.start_time is not None:
            samples.append(
                (datetime.fromtimestamp(run.start_time, tz=UTC), run.start_time - created)
            )
        elif run.dagster_run.status in (
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
        ):
            samples.append((now, now.timestamp() - created))
    return samples


def collect_events(
    instance: dg.DagsterInstance, slo: Slo, since: datetime, now: datetime, triton: bool
) -> tuple[list[SliEvent], str]:
    """The SLO's events from run history, and where they came from (shown in the report)."""
    stage = slo.stage or Stage.LETTER_SCORES.value
    if slo.sli is SliKind.PHRASE_SUCCESS:
        events = []
        for at, _, metadata in _materializations(instance, stage, since):
            phrases_in = _value(metadata, "phrases_in")
            phrases_ok = _value(metadata, "phrases_ok")
            if isinstance(phrases_in, int) and isinstance(phrases_ok, int):
                events.append(SliEvent(at, float(phrases_ok), float(phrases_in)))
        return events, f"run history: {stage} materializations"
    if slo.sli is SliKind.PARTITION_FRESHNESS:
        samples = [
            (at, partition_freshness_s(partition, at.timestamp()))
            for at, partition, _ in _materializations(instance, stage, since)
            if partition
        ]
        return threshold_events(samples, slo.threshold_s or 0.0), "run history: publish times"
    if slo.sli is SliKind.STAGE_LATENCY:
        samples = _step_durations(instance, stage, since)
        return threshold_events(samples, slo.threshold_s or 0.0), f"run history: {stage} steps"
    if slo.sli is SliKind.QUEUE_AGE:
        samples = _queue_ages(instance, since, now)
        return threshold_events(samples, slo.threshold_s or 0.0), "run history: run queue times"
    if slo.sli is SliKind.TRITON_AVAILABILITY:
        if not triton:
            return [], "not applicable: inference is local in this environment"
        events = []
        for at, _, metadata in _materializations(instance, stage, since):
            engines = _value(metadata, "phrases_by_engine")
            if isinstance(engines, dict):
                inferred = {k: int(v) for k, v in engines.items() if k != "cache"}
                if sum(inferred.values()):
                    events.append(
                        SliEvent(
                            at, float(inferred.get("triton", 0)), float(sum(inferred.values()))
                        )
                    )
        return events, "run history: phrases Triton served vs. the local fallback"
    return [], "Prometheus (Triton metrics): see deploy/monitoring/prometheus-rules.yaml"


def _fmt(value: float | None, pattern: str = "{:.4f}") -> str:
    return "no data" if value is None else pattern.format(value)


def report_metadata(
    spec: SloSpec, statuses: list[tuple[SloStatus, list[str]]]
) -> dict[str, dg.MetadataValue]:
    rows = []
    metadata: dict[str, dg.MetadataValue] = {}
    days: dict[str, dict[str, str]] = defaultdict(dict)
    for status, fired in statuses:
        slo = status.slo
        row: dict[str, object] = {
            "slo": slo.name,
            "target": slo.target,
            f"sli ({slo.window_days}d)": _fmt(status.sli_window),
            "budget left": _fmt(status.budget_remaining, "{:.1%}"),
        }
        for window, rate in status.burn_rates.items():
            row[f"burn {window}"] = _fmt(rate, "{:.2f}")
            if rate is not None:
                metadata[f"{slo.name}/burn_{window}"] = dg.MetadataValue.float(round(rate, 4))
        row["alerting"] = ", ".join(fired) or "-"
        row["source"] = status.source
        rows.append(row)
        if status.sli_window is not None:
            metadata[f"{slo.name}/sli"] = dg.MetadataValue.float(round(status.sli_window, 6))
        if status.budget_remaining is not None:
            metadata[f"{slo.name}/budget_remaining"] = dg.MetadataValue.float(
                round(status.budget_remaining, 6)
            )
        for day, value in status.daily.items():
            days[day.isoformat()][slo.name] = f"{value:.4f}"
    metadata["slos"] = dg.MetadataValue.md(markdown_table(rows, limit=len(rows)))
    daily_rows = [
        {"day": day, **{s.slo.name: days[day].get(s.slo.name, "-") for s, _ in statuses}}
        for day in sorted(days, reverse=True)
    ]
    if daily_rows:
        metadata["sli_by_day"] = dg.MetadataValue.md(
            markdown_table(daily_rows, limit=len(daily_rows))
        )
    metadata["alerting"] = dg.MetadataValue.json(
        {s.slo.name: fired for s, fired in statuses if fired}
    )
    return metadata


def build_slo_report(
    instance: dg.DagsterInstance, spec: SloSpec, now: datetime, triton: bool
) -> list[tuple[SloStatus, list[str]]]:
    statuses = []
    for slo in spec.slos:
        since = now - timedelta(days=slo.window_days)
        events, source = collect_events(instance, slo, since, now, triton)
        statuses.append(
            (
                evaluate(slo, events, now, spec.report_windows, source),
                firing(spec, slo, events, now),
            )
        )
    return statuses


@dg.asset(
    group_name="operations",
    kinds={"python"},
    description="SLIs per day, error budgets and 1h/6h/3d burn rates of asr_assets/slo.yaml, "
    "computed from the run history (docs/slo.md).",
)
def slo_report(
    context: dg.AssetExecutionContext, inference: InferenceResource
) -> dg.MaterializeResult:
    spec = load_spec()
    statuses = build_slo_report(
        context.instance,
        spec,
        datetime.now(UTC),
        triton=isinstance(inference, TritonInferenceResource),
    )
    return dg.MaterializeResult(metadata=report_metadata(spec, statuses))


slo_report_schedule = dg.ScheduleDefinition(
    name="slo_report_hourly",
    target=dg.AssetSelection.assets(slo_report),
    cron_schedule="7 * * * *",
    execution_timezone="UTC",
)
