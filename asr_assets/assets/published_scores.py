"""`published_scores`: one idempotent record per activity, pushed to the consumer.

A partition whose `_QUARANTINED` report exists (a blocking quality gate failed on it) is never
published: the asset skips it, publishes the run's other partitions, and then fails naming it.
"""

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from asr_assets.assets.common import StageSummary, partition_metadata, summary_metadata
from asr_assets.assets.instrumentation import PartitionRecord, partition_scope, stage_scope
from asr_assets.assets.letter_scores import quarantine_key, read_quarantine
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.core.errors import Stage
from asr_assets.core.models import ActivityResult, ModelInfo, PartitionManifest
from asr_assets.core.storage import result_prefix
from asr_assets.core.tables import RESULT_SCHEMAS
from asr_assets.observability.logging import get_logger
from asr_assets.resources.object_store import ObjectStore
from asr_assets.resources.publisher import Publisher, PublishReport

log = get_logger(__name__)


class PartitionNotCommittedError(RuntimeError):
    """Publishing reads only committed partitions."""


class PartitionQuarantinedError(RuntimeError):
    """A quality gate quarantined the partition; its scores must not reach the consumer."""


def idempotency_key(activity_id: str, model: ModelInfo, run_id: str) -> str:
    """Same activity, model and run: the same key, so a retried publish writes nothing twice."""
    return hashlib.sha256(f"{activity_id}|{model.sha256}|{run_id}".encode()).hexdigest()[:32]


def read_manifest(store: ObjectStore, partition_key: str) -> PartitionManifest:
    """The `_SUCCESS` manifest of a committed partition; the only way its files are found."""
    payload = store.read_committed(result_prefix("letter_scores", partition_key))
    if payload is None:
        raise PartitionNotCommittedError(f"letter_scores {partition_key} has no _SUCCESS manifest")
    return PartitionManifest.model_validate(payload)


def read_result_partition(
    store: ObjectStore, partition_key: str
) -> tuple[PartitionManifest, dict[str, list[dict[str, object]]]]:
    """Rows of a committed partition, read only through the files its `_SUCCESS` names."""
    manifest = read_manifest(store, partition_key)
    rows = {
        name: store.read_table(manifest.files[name], schema).to_pylist()
        for name, schema in RESULT_SCHEMAS.items()
    }
    return manifest, rows


#: What an activity's record needs of its phrase and error rows.
PHRASE_COLUMNS = [
    "activity_id",
    "tenant_id",
    "phrase_index",
    "expected_text",
    "transcript",
    "accuracy",
    "n_expected",
    "n_correct",
]
ERROR_COLUMNS = ["activity_id", "tenant_id", "phrase_index", "reason_code"]

#: Activities turned into records and handed to the publisher at once.
PUBLISH_CHUNK_ACTIVITIES = 2000


def activity_record_chunks(
    store: ObjectStore, manifest: PartitionManifest, chunk: int = PUBLISH_CHUNK_ACTIVITIES
) -> Iterator[list[ActivityResult]]:
    """Records of every activity of the partition, in activity order, `chunk` activities at a time.

    Only the columns a record needs are read (as Arrow), and only one chunk of activities is
    ever held as Python rows and records, so publishing a 100k-phrase day stays flat.
    """
    phrases = store.read_table(
        manifest.files["phrase_results"], RESULT_SCHEMAS["phrase_results"]
    ).select(PHRASE_COLUMNS)
    errors = store.read_table(manifest.files["errors"], RESULT_SCHEMAS["errors"]).select(
        ERROR_COLUMNS
    )
    activities = pc.unique(
        pa.chunked_array(
            [*phrases.column("activity_id").chunks, *errors.column("activity_id").chunks],
            type=pa.string(),
        )
    ).sort()
    for offset in range(0, len(activities), chunk):
        ids = activities[offset : offset + chunk]
        rows = {
            "phrase_results": phrases.filter(
                pc.is_in(phrases.column("activity_id"), ids)
            ).to_pylist(),
            "errors": errors.filter(pc.is_in(errors.column("activity_id"), ids)).to_pylist(),
        }
        yield activity_records(manifest, rows)


def activity_records(
    manifest: PartitionManifest, rows: dict[str, list[dict[str, object]]]
) -> list[ActivityResult]:
    phrases: dict[str, list[dict[str, object]]] = defaultdict(list)
    errors: dict[str, list[dict[str, object]]] = defaultdict(list)
    tenants: dict[str, str] = {}
    for phrase in rows["phrase_results"]:
        phrases[str(phrase["activity_id"])].append(phrase)
        tenants[str(phrase["activity_id"])] = str(phrase["tenant_id"])
    for error in rows["errors"]:
        errors[str(error["activity_id"])].append(error)
        tenants.setdefault(str(error["activity_id"]), str(error.get("tenant_id") or "unknown"))
    records = []
    for activity_id in sorted(set(phrases) | set(errors)):
        scored = sorted(phrases[activity_id], key=lambda p: int(p["phrase_index"]))  # type: ignore[call-overload]
        expected = sum(int(p["n_expected"]) for p in scored)  # type: ignore[call-overload]
        correct = sum(int(p["n_correct"]) for p in scored)  # type: ignore[call-overload]
        summary = [
            {
                "phrase_index": p["phrase_index"],
                "expected_text": p["expected_text"],
                "transcript": p["transcript"],
                "accuracy": p["accuracy"],
            }
            for p in scored
        ] + [
            {"phrase_index": e["phrase_index"], "error": e["reason_code"]}
            for e in sorted(errors[activity_id], key=lambda e: int(e["phrase_index"]))  # type: ignore[call-overload]
        ]
        records.append(
            ActivityResult(
                activity_id=activity_id,
                tenant_id=tenants[activity_id],
                activity_date=manifest.partition,  # type: ignore[arg-type]
                n_phrases=len(scored) + len(errors[activity_id]),
                n_scored=len(scored),
                n_errors=len(errors[activity_id]),
                n_expected_letters=expected,
                n_correct_letters=correct,
                accuracy=round(correct / expected, 4) if expected else None,
                model_name=manifest.model.name,
                model_version=manifest.model.version,
                model_sha256=manifest.model.sha256,
                run_id=manifest.run_id,
                idempotency_key=idempotency_key(activity_id, manifest.model, manifest.run_id),
                phrases=summary,
            )
        )
    return records


def publish_partition(
    store: ObjectStore, publisher: Publisher, partition_key: str
) -> tuple[StageSummary, PublishReport, int]:
    """Publish one committed, unquarantined partition; returns (summary, report, records).

    Failed deliveries are counted in the report, not raised, so the caller can publish the run's
    other partitions and report every failure together.
    """
    quarantine = read_quarantine(store, partition_key)
    if quarantine is not None:
        raise PartitionQuarantinedError(
            f"letter_scores {partition_key} is quarantined by "
            f"{', '.join(sorted(quarantine.gates))}: see {store.uri(quarantine_key(partition_key))}"
        )
    summary = StageSummary(Stage.PUBLISH, partition_key)
    started = time.perf_counter()
    manifest = read_manifest(store, partition_key)
    report = PublishReport()
    records = 0
    for chunk in activity_record_chunks(store, manifest):
        report.add(publisher.publish(partition_key, chunk))
        records += len(chunk)
        for record in chunk:
            summary.count_errors(
                str(p["error"]) for p in record.phrases if p.get("error") is not None
            )
            if len(summary.preview) < 10:
                summary.preview.append(
                    {
                        "activity_id": record.activity_id,
                        "phrases": record.n_phrases,
                        "errors": record.n_errors,
                        "accuracy": record.accuracy,
                    }
                )
    summary.phrases_in = manifest.phrases_in
    summary.phrases_ok = manifest.phrases_scored
    summary.phrases_errored = manifest.phrases_errored
    summary.extra["activities_published"] = report.published
    summary.extra["activities_duplicate"] = report.duplicates
    summary.extra["activities_failed"] = report.failed
    summary.extra["publish_retries"] = report.retries
    summary.extra["destination"] = publisher.destination(partition_key)
    summary.timings_ms["publish"] = (time.perf_counter() - started) * 1000
    log.info(
        "partition_published",
        stage=Stage.PUBLISH.value,
        partition=partition_key,
        published=report.published,
        duplicates=report.duplicates,
        failed=report.failed,
        retries=report.retries,
    )
    return summary, report, records


def build_published_scores(
    store: ObjectStore, publisher: Publisher, partition_key: str
) -> tuple[StageSummary, PublishReport]:
    """Publish one partition; raises when any activity could not be delivered."""
    summary, report, records = publish_partition(store, publisher, partition_key)
    if report.failed:
        raise PublishFailedError(
            f"{report.failed} of {records} activities failed to publish: "
            + ", ".join(sorted(set(report.failures.values())))
        )
    return summary, report


@dataclass
class PublishRun:
    """Everything one run of the asset did, across its partitions: what the metadata shows."""

    summaries: list[StageSummary] = field(default_factory=list)
    reports: dict[str, PublishReport] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)  # partition -> report location

    def totals(self) -> dict[str, dg.MetadataValue]:
        reasons: Counter[str] = Counter()
        for report in self.reports.values():
            reasons.update(report.failures.values())
        per_partition = {
            key: {
                "published": r.published,
                "duplicates": r.duplicates,
                "failed": r.failed,
                "retries": r.retries,
            }
            for key, r in self.reports.items()
        }
        return {
            "activities_published": dg.MetadataValue.int(
                sum(r.published for r in self.reports.values())
            ),
            "activities_duplicate": dg.MetadataValue.int(
                sum(r.duplicates for r in self.reports.values())
            ),
            "activities_failed": dg.MetadataValue.int(sum(r.failed for r in self.reports.values())),
            "publish_retries": dg.MetadataValue.int(sum(r.retries for r in self.reports.values())),
            "publish_failures_by_reason": dg.MetadataValue.json(dict(sorted(reasons.items()))),
            "publish_by_partition": dg.MetadataValue.json(per_partition),
            "partitions_quarantined": dg.MetadataValue.json(self.quarantined),
        }


@contextmanager
def _unobserved(_key: str) -> Iterator[PartitionRecord]:
    yield PartitionRecord()


def publish_run(
    store: ObjectStore,
    publisher: Publisher,
    partition_keys: list[str],
    observe: Callable[[str], AbstractContextManager[PartitionRecord]] = _unobserved,
) -> PublishRun:
    """Publish every partition of a run that may be published; remember the ones that may not.

    `observe` wraps each partition (the asset passes its `partition_scope`: span, log record,
    metrics).
    """
    run = PublishRun()
    for key in partition_keys:
        with observe(key) as record:
            try:
                summary, report, _ = publish_partition(store, publisher, key)
            except PartitionQuarantinedError:
                run.quarantined[key] = store.uri(quarantine_key(key))
                log.warning(
                    "partition_not_published_quarantined", partition=key, status="quarantined"
                )
                continue
            record.summary = summary
            record.attributes["asr.activities_failed"] = report.failed
        run.summaries.append(summary)
        run.reports[key] = report
    return run


class PublishFailedError(RuntimeError):
    """Some activities were not delivered; the retry re-sends only those (idempotency keys)."""


@letter_scoring_asset(
    deps=["letter_scores"],
    kinds={"json"},
    description="One record per activity delivered to the consumer; duplicates are no-ops.",
)
def published_scores(
    context: dg.AssetExecutionContext, store: ObjectStore, publisher: Publisher
) -> dg.MaterializeResult:
    with stage_scope(context, Stage.PUBLISH, permanent=(PartitionNotCommittedError,)):
        run = publish_run(
            store,
            publisher,
            list(context.partition_keys),
            observe=lambda key: partition_scope(context, Stage.PUBLISH, key),
        )
        for summary in run.summaries:
            context.add_asset_metadata(
                partition_metadata(summary), partition_key=summary.partition_key
            )
        metadata = {**summary_metadata(run.summaries), **run.totals()}
        failed = {key: r.failed for key, r in run.reports.items() if r.failed}
        if run.quarantined or failed:
            # dg.Failure carries the counts into the step-failure event, so deliveries that did
            # succeed are still visible. A step retry re-sends everything (the duplicates are
            # no-ops), so it is allowed only when some delivery failed for a transient reason:
            # a quarantine or a rejected record is the same on every attempt.
            problems = []
            if run.quarantined:
                problems.append(f"quarantined, not published: {', '.join(sorted(run.quarantined))}")
            if failed:
                problems.append(
                    "deliveries failed: "
                    + ", ".join(f"{key} ({count})" for key, count in sorted(failed.items()))
                )
            transient = sum(r.transient_failures for r in run.reports.values())
            raise dg.Failure(
                description="; ".join(problems), metadata=metadata, allow_retries=transient > 0
            )
    return dg.MaterializeResult(metadata=metadata)
