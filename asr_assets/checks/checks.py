"""The blocking quality gates and the drift report, as Dagster asset checks.

Two gates, one op each, partitioned like their assets (`daily_partitions`) so a check reads only
the partitions of its run:

- `activities_quality_gate` on `activities` (the stage table); failing it stops phrase_audio and
  everything after it in the run.
- `letter_scores_quality_gate` on `letter_scores` (the committed result partition, read through
  its `_SUCCESS` manifest); failing it stops `published_scores`.

A run may cover up to seven partitions (the backfill policy). Dagster records one evaluation per
check per run, so each check passes only if every partition of the run passes; the metadata and
the `_QUARANTINED` reports say which partitions failed. Only failing partitions are quarantined:
the clean ones publish on the next run of `published_scores`.

`letter_scores_drift` is a WARN, non-blocking check: it never stops a run.
"""

import io
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asr_assets.assets.common import load_sensitive_digests, markdown_table, redact_metadata
from asr_assets.assets.letter_scores import (
    QuarantineEntry,
    quarantine_partition,
    read_quarantine,
    release_quarantine,
)
from asr_assets.assets.partitions import daily_partitions
from asr_assets.assets.published_scores import PartitionNotCommittedError, read_manifest
from asr_assets.checks.drift import (
    DriftReport,
    DriftSettings,
    drift_report,
    insufficient_data,
    markdown_histogram,
    numeric_metadata,
    render_svg,
)
from asr_assets.checks.models import CheckOutcome
from asr_assets.checks.resources import DataQualityResource
from asr_assets.checks.suites import ACTIVITIES_CHECKS, LETTER_SCORES_CHECKS
from asr_assets.core.errors import Stage
from asr_assets.core.models import PartitionManifest
from asr_assets.core.storage import RESULT_TABLES, partition_date, result_prefix, stage_table_key
from asr_assets.observability.logging import get_logger, redact, run_context
from asr_assets.resources.object_store import ObjectStore, StoredTable

log = get_logger(__name__)

ACTIVITIES_GATE = "activities"
LETTER_SCORES_GATE = "letter_scores"
DRIFT_CHECK = "letter_scores_drift"


_CHECK_DESCRIPTIONS = {
    "activities_schema": "The activities stage table has the contract's columns and Arrow types.",
    "activities_keys": "Accepted rows: activity_id, phrase_index, tenant_id present; "
    "(activity_id, phrase_index) unique; phrase_index in range.",
    "activities_values": "Accepted rows: expected_text matches ^[a-z]( [a-z])*$, audio_key is a "
    "safe store key, activity_date is the partition's day, audio segments ordered.",
    "activities_rejected_share": "At most max_rejected_share of the day's catalog rows were "
    "rejected by the activities stage, each with a known reason code.",
    "letter_scores_schema": "The three result tables have the contract's columns and types.",
    "letter_scores_values": "Status in the allowed set, confidence in [0, 1], 0 <= start_s <= "
    "end_s <= phrase duration (+ tolerance), letters and reason codes valid.",
    "letter_scores_completeness": "One row per expected letter per scored phrase, no orphan "
    "letters, every phrase of the partition scored or errored exactly once.",
    "letter_scores_error_share": "At most max_error_share of the partition's phrases errored.",
    "letter_scores_unaligned_share": "At most max_unaligned_share of expected letters unaligned.",
    "letter_scores_model": "Model name, version and sha256 present on every row, one model "
    "across the partition, equal to the _SUCCESS manifest's.",
}


def _specs(asset: str, names: Sequence[str]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name,
            asset=asset,
            blocking=True,
            partitions_def=daily_partitions,
            description=_CHECK_DESCRIPTIONS[name],
        )
        for name in names
    ]


# --- reading ----------------------------------------------------------------------------------


def validate_committed_letter_scores(
    store: ObjectStore, data_quality: DataQualityResource, partition_key: str
) -> tuple[PartitionManifest, list[CheckOutcome]]:
    """The letter_scores suites over one committed partition, as the blocking gate runs them.

    The tables are opened, not read: the native engine judges the letter rows in chunks and
    decodes only the phrase columns its suites read, so the gate holds the compressed files,
    one chunk of letter rows and a few phrase columns, whatever the size of the day.
    Tables are read only through the files `_SUCCESS` names, and never cast to the contract
    (unlike publishing): a column of the wrong type must reach the schema check.
    """
    manifest = read_manifest(store, partition_key)
    tables: dict[str, pa.Table | StoredTable] = {
        name: store.open_table(manifest.files[name]) for name in RESULT_TABLES
    }
    return manifest, data_quality.validate_letter_scores(partition_key, manifest, tables)


def _committed_run_id(store: ObjectStore, partition_key: str) -> str | None:
    payload = store.read_committed(result_prefix("letter_scores", partition_key))
    return str(payload.get("run_id")) if payload else None


# --- verdicts ---------------------------------------------------------------------------------


def judge_partition(
    store: ObjectStore,
    partition_key: str,
    gate: str,
    outcomes: Sequence[CheckOutcome],
    check_run_id: str,
    result_run_id: str | None,
) -> str | None:
    """Quarantine a partition whose gate failed (returns the report's location), else release."""
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        release_quarantine(
            store, partition_key, gate, result_run_id if gate == LETTER_SCORES_GATE else None
        )
        return None
    entry = QuarantineEntry(
        gate=gate,
        check_run_id=check_run_id,
        result_run_id=result_run_id,
        quarantined_at=datetime.now(UTC),
        failed_checks=[o.check for o in failed],
        summary=redact(
            f"{gate} gate failed on {partition_key}: "
            + "; ".join(f.describe() for o in failed for f in o.failures[:3])
        ),
        failed_expectations=redact(
            [
                {**f.as_json(), "sample_rows": [dict(r) for r in f.sample_rows]}
                for o in failed
                for f in o.failures
            ]
        ),
    )
    return store.uri(quarantine_partition(store, partition_key, entry))


def check_result(
    check: str, outcomes: Sequence[CheckOutcome], quarantined: Mapping[str, str]
) -> dg.AssetCheckResult:
    """One Dagster result for one check over every partition of the run."""
    failures = [(o.partition_key, f) for o in outcomes for f in o.failures]
    passed = not failures
    metadata: dict[str, dg.MetadataValue] = {
        "partitions": dg.MetadataValue.text(", ".join(o.partition_key for o in outcomes)),
        "expectations_evaluated": dg.MetadataValue.int(sum(o.evaluated for o in outcomes)),
        "rows_checked": dg.MetadataValue.int(sum(o.rows_checked for o in outcomes)),
        "failed_expectations": dg.MetadataValue.json([f.as_json(key) for key, f in failures]),
        "unexpected_count": dg.MetadataValue.int(sum(o.unexpected_count for o in outcomes)),
    }
    observed = {o.partition_key: dict(o.observations) for o in outcomes if o.observations}
    if observed:
        metadata["observed"] = dg.MetadataValue.json(observed)
    if failures:
        sections = []
        for key, failure in failures:
            sections.append(f"**{key}: {failure.describe()}**\n")
            if failure.sample_rows:
                sections.append(markdown_table([dict(r) for r in failure.sample_rows]))
        metadata["offending_rows"] = dg.MetadataValue.md("\n\n".join(sections))
        failed_keys = sorted({key for key, _ in failures})
        metadata["quarantined_partitions"] = dg.MetadataValue.json(
            {key: quarantined[key] for key in failed_keys if key in quarantined}
        )
    description = (
        f"{len(outcomes)} partition(s) passed"
        if passed
        else "; ".join(f"{key}: {f.describe()}" for key, f in failures[:3])
    )
    return dg.AssetCheckResult(
        check_name=check,
        passed=passed,
        metadata=redact_metadata(metadata),
        description=redact(description[:1000]),
    )


def _results(
    checks: Sequence[str], outcomes: Sequence[CheckOutcome], quarantined: Mapping[str, str]
) -> Iterator[dg.AssetCheckResult]:
    for check in checks:
        yield check_result(check, [o for o in outcomes if o.check == check], quarantined)


# --- the gates --------------------------------------------------------------------------------


@dg.multi_asset_check(
    specs=_specs("activities", ACTIVITIES_CHECKS),
    name="activities_quality_gate",
    description="Great-expectations suites over the activities stage table; blocks scoring.",
)
def activities_quality_gate(
    context: dg.AssetCheckExecutionContext, store: ObjectStore, data_quality: DataQualityResource
) -> Iterator[dg.AssetCheckResult]:
    outcomes: list[CheckOutcome] = []
    quarantined: dict[str, str] = {}
    with run_context(
        correlation_id=context.run.run_id, stage=Stage.ACTIVITIES.value, check=ACTIVITIES_GATE
    ):
        for key in context.partition_keys:
            load_sensitive_digests(store, key)
            table = store.read_table(stage_table_key(Stage.ACTIVITIES, key))
            partition_outcomes = data_quality.validate_activities(key, table)
            outcomes += partition_outcomes
            location = judge_partition(
                store,
                key,
                ACTIVITIES_GATE,
                partition_outcomes,
                context.run.run_id,
                _committed_run_id(store, key),
            )
            if location:
                quarantined[key] = location
    yield from _results(ACTIVITIES_CHECKS, outcomes, quarantined)


@dg.multi_asset_check(
    specs=_specs("letter_scores", LETTER_SCORES_CHECKS),
    name="letter_scores_quality_gate",
    description="Great-expectations suites over the committed result partition; blocks publish.",
)
def letter_scores_quality_gate(
    context: dg.AssetCheckExecutionContext, store: ObjectStore, data_quality: DataQualityResource
) -> Iterator[dg.AssetCheckResult]:
    outcomes: list[CheckOutcome] = []
    quarantined: dict[str, str] = {}
    with run_context(
        correlation_id=context.run.run_id,
        stage=Stage.LETTER_SCORES.value,
        check=LETTER_SCORES_GATE,
    ):
        for key in context.partition_keys:
            load_sensitive_digests(store, key)
            manifest, partition_outcomes = validate_committed_letter_scores(
                store, data_quality, key
            )
            outcomes += partition_outcomes
            location = judge_partition(
                store,
                key,
                LETTER_SCORES_GATE,
                partition_outcomes,
                context.run.run_id,
                manifest.run_id,
            )
            if location:
                quarantined[key] = location
    yield from _results(LETTER_SCORES_CHECKS, outcomes, quarantined)


# --- drift ------------------------------------------------------------------------------------


def score_values(store: ObjectStore, partition_key: str) -> dict[str, np.ndarray] | None:
    """Phrase accuracies and expected-letter confidences of a committed partition, or None."""
    payload = store.read_committed(result_prefix("letter_scores", partition_key))
    if payload is None:
        return None
    manifest = PartitionManifest.model_validate(payload)
    phrases = pq.read_table(
        io.BytesIO(store.read_bytes(manifest.files["phrase_results"])), columns=["accuracy"]
    )
    letters = pq.read_table(
        io.BytesIO(store.read_bytes(manifest.files["letter_scores"])),
        columns=["status", "confidence"],
    )
    expected = letters.filter(pc.not_equal(letters.column("status"), "inserted"))
    return {
        "phrase_accuracy": phrases.column("accuracy").to_numpy(zero_copy_only=False),
        "letter_confidence": expected.column("confidence").to_numpy(zero_copy_only=False),
    }


def trailing_partitions(
    store: ObjectStore, partition_key: str, count: int, lookback_days: int
) -> list[str]:
    """Up to `count` committed, unquarantined partitions before `partition_key`, newest first."""
    day = partition_date(partition_key)
    found: list[str] = []
    for offset in range(1, lookback_days + 1):
        key = (day - timedelta(days=offset)).isoformat()
        if store.read_committed(result_prefix("letter_scores", key)) is None:
            continue
        if read_quarantine(store, key) is not None:
            continue  # a quarantined day is not a trustworthy picture of normal
        found.append(key)
        if len(found) == count:
            break
    return found


def partition_drift(
    store: ObjectStore, partition_key: str, data_quality: DataQualityResource
) -> DriftReport:
    current = score_values(store, partition_key)
    if current is None:
        raise PartitionNotCommittedError(f"letter_scores {partition_key} has no _SUCCESS manifest")
    baseline_keys = trailing_partitions(
        store,
        partition_key,
        data_quality.drift_trailing_partitions,
        data_quality.drift_lookback_days,
    )
    baseline: dict[str, list[np.ndarray]] = {name: [] for name in current}
    for key in baseline_keys:
        values = score_values(store, key)
        for name in current:
            if values is not None:
                baseline[name].append(values[name])
    settings = DriftSettings(
        max_ks=data_quality.drift_max_ks,
        max_mean_shift=data_quality.drift_max_mean_shift,
        min_samples=data_quality.drift_min_samples,
        bins=data_quality.histogram_bins,
    )
    return drift_report(
        partition_key,
        current,
        {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in baseline.items()},
        baseline_keys,
        settings,
    )


def drift_plot_key(partition_key: str) -> str:
    return f"quality/letter_scores/activity_date={partition_key}/score_distribution.svg"


@dg.asset_check(
    asset="letter_scores",
    name=DRIFT_CHECK,
    blocking=False,
    partitions_def=daily_partitions,
    description="Accuracy and confidence distributions vs the trailing committed partitions "
    "(KS statistic, mean shift); WARN only, never blocks.",
)
def letter_scores_drift(
    context: dg.AssetCheckExecutionContext, store: ObjectStore, data_quality: DataQualityResource
) -> dg.AssetCheckResult:
    reports: list[DriftReport] = []
    plots: dict[str, str] = {}
    unjudged: dict[str, str] = {}
    numbers: dict[str, dict[str, float | int]] = {}
    for key in context.partition_keys:
        report = partition_drift(store, key, data_quality)
        store.write_bytes(drift_plot_key(key), render_svg(report).encode())
        plots[key] = store.uri(drift_plot_key(key))
        markdown = "\n\n".join(markdown_histogram(m) for m in report.metrics)
        reason = insufficient_data(report, data_quality.drift_trailing_partitions)
        if reason is not None:
            unjudged[key] = reason
        numbers[key] = numeric_metadata(report)
        # The plot belongs to the asset's partition, so it is recorded on the asset too; the
        # numbers are flat floats so the UI plots them across partitions.
        context.op_execution_context.log_event(
            dg.AssetObservation(
                asset_key="letter_scores",
                partition=key,
                metadata={
                    **{name: dg.MetadataValue.float(float(v)) for name, v in numbers[key].items()},
                    "score_distribution": dg.MetadataValue.md(markdown),
                    "score_distribution_svg": dg.MetadataValue.path(plots[key]),
                    "drift": dg.MetadataValue.json([m.as_json() for m in report.metrics]),
                    "drift_baseline": dg.MetadataValue.json(list(report.baseline_partitions)),
                    "drift_verdict": dg.MetadataValue.text(reason or _verdict(report)),
                },
            )
        )
        log.info(
            "drift_evaluated",
            correlation_id=context.run.run_id,
            stage=Stage.LETTER_SCORES.value,
            check=DRIFT_CHECK,
            partition=key,
            baseline_partitions=len(report.baseline_partitions),
            shifted=report.shifted,
            metrics=[m.as_json() for m in report.metrics],
        )
        reports.append(report)
    shifted = [r for r in reports if r.shifted]
    metadata: dict[str, dg.MetadataValue] = {
        "partitions": dg.MetadataValue.text(", ".join(r.partition_key for r in reports)),
        "drift": dg.MetadataValue.json(
            {r.partition_key: [m.as_json() for m in r.metrics] for r in reports}
        ),
        "baseline_partitions": dg.MetadataValue.json(
            {r.partition_key: list(r.baseline_partitions) for r in reports}
        ),
        "baseline_days_required": dg.MetadataValue.int(data_quality.drift_trailing_partitions),
        "score_distribution": dg.MetadataValue.md(
            "\n\n".join(
                f"### {r.partition_key}\n\n" + "\n\n".join(markdown_histogram(m) for m in r.metrics)
                for r in reports
            )
        ),
        "score_distribution_svg": dg.MetadataValue.json(plots),
    }
    if len(reports) == 1:
        # One partition: its numbers are the check's numbers (the check's own plots).
        key = reports[0].partition_key
        metadata.update({n: dg.MetadataValue.float(float(v)) for n, v in numbers[key].items()})
    parts: list[str] = []
    if shifted:
        parts.append(
            "score distribution shifted: "
            + ", ".join(
                f"{r.partition_key} "
                f"({', '.join(m.name for m in r.metrics if m.verdict == 'shifted')})"
                for r in shifted
            )
        )
    if unjudged:
        parts.append(
            "; ".join(
                reason if len(reports) == 1 else f"{key}: {reason}"
                for key, reason in unjudged.items()
            )
        )
    description = "; ".join(parts) or "no shift beyond the thresholds"
    return dg.AssetCheckResult(
        passed=not shifted and not unjudged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def _verdict(report: DriftReport) -> str:
    return "shifted" if report.shifted else "stable"


QUALITY_CHECKS: list[dg.AssetChecksDefinition] = [
    activities_quality_gate,
    letter_scores_quality_gate,
    letter_scores_drift,
]
