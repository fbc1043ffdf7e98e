"""`letter_scores`: the result partition, staged and then committed with a `_SUCCESS` manifest.

It also owns the partition's quarantine marker: a `_QUARANTINED` report beside `_SUCCESS` that a
failed quality gate writes and `published_scores` refuses to publish past. A new commit replaces
the data the report judged, so committing clears it; the gates then judge the new data.
"""

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from asr_assets.assets.common import ReconciliationError, StageSummary, summary_metadata
from asr_assets.assets.instrumentation import PartitionRecord, each_partition, stage_scope
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.core.errors import Stage
from asr_assets.core.ledger import (
    LEDGER_SCHEMA,
    CommitVerification,
    ledger_table,
    phrase_keys,
    verify_commit,
)
from asr_assets.core.models import ModelInfo, PartitionManifest
from asr_assets.core.storage import (
    RESULT_TABLES,
    ledger_key,
    result_prefix,
    stage_table_key,
    staging_prefix,
)
from asr_assets.core.tables import ACTIVITIES_SCHEMA, RESULT_SCHEMAS, value_counts
from asr_assets.observability.logging import get_logger
from asr_assets.observability.metrics import ActivityOutcome, emit_activities
from asr_assets.observability.tracing import span
from asr_assets.resources.object_store import ObjectStore

log = get_logger(__name__)

QUARANTINE_FILE = "_QUARANTINED"
RELEASE_INSTRUCTIONS = (
    "Read failed_expectations and sample_rows, fix the cause (catalog rows, audio, model, "
    "thresholds), then rematerialize letter_scores for this partition (with its checks): the new "
    "commit removes this file and the gates judge the new data. Re-running only the checks "
    "after a threshold change also lifts a gate's entry once that gate passes."
)


class QuarantineEntry(BaseModel):
    """Why one gate (activities or letter_scores) stopped this partition from being published."""

    model_config = ConfigDict(frozen=True)

    gate: str
    check_run_id: str
    result_run_id: str | None
    quarantined_at: datetime
    failed_checks: list[str]
    summary: str
    failed_expectations: list[dict[str, Any]]


class QuarantineReport(BaseModel):
    """Contents of `_QUARANTINED`: one entry per gate that failed; read by people and by publish."""

    model_config = ConfigDict(frozen=True)

    partition: str
    gates: dict[str, QuarantineEntry]
    how_to_release: str = RELEASE_INSTRUCTIONS


def quarantine_key(partition_key: str) -> str:
    return f"{result_prefix('letter_scores', partition_key)}/{QUARANTINE_FILE}"


def read_quarantine(store: ObjectStore, partition_key: str) -> QuarantineReport | None:
    """The partition's quarantine report, or None when it may be published."""
    key = quarantine_key(partition_key)
    if not store.exists(key):
        return None
    return QuarantineReport.model_validate(store.read_json(key))


def quarantine_partition(store: ObjectStore, partition_key: str, entry: QuarantineEntry) -> str:
    """Add (or replace) one gate's entry in the partition's report; returns the report's key."""
    current = read_quarantine(store, partition_key)
    gates = dict(current.gates) if current else {}
    gates[entry.gate] = entry
    key = quarantine_key(partition_key)
    store.write_json(
        key, QuarantineReport(partition=partition_key, gates=gates).model_dump(mode="json")
    )
    log.warning(
        "partition_quarantined",
        stage=Stage.LETTER_SCORES.value,
        partition=partition_key,
        gate=entry.gate,
        failed_checks=entry.failed_checks,
        run_id=entry.check_run_id,
    )
    return key


def release_quarantine(
    store: ObjectStore, partition_key: str, gate: str, result_run_id: str | None = None
) -> bool:
    """Drop `gate`'s entry after that gate passed; the file goes when no entry is left.

    With `result_run_id`, only an entry about that same committed data is dropped: a pass on new
    data says nothing about the data an older entry judged.
    """
    current = read_quarantine(store, partition_key)
    if current is None or gate not in current.gates:
        return False
    entry = current.gates[gate]
    if result_run_id is not None and entry.result_run_id not in (None, result_run_id):
        return False
    gates = {name: e for name, e in current.gates.items() if name != gate}
    key = quarantine_key(partition_key)
    if gates:
        store.write_json(
            key, QuarantineReport(partition=partition_key, gates=gates).model_dump(mode="json")
        )
    else:
        store.delete(key)
    log.info("quarantine_lifted", partition=partition_key, gate=gate, remaining=sorted(gates))
    return True


def _partition_model(phrase_table: pa.Table, fallback: ModelInfo | None) -> ModelInfo:
    if phrase_table.num_rows:
        first = phrase_table.slice(0, 1).to_pylist()[0]
        return ModelInfo(
            name=first["model_name"], version=first["model_version"], sha256=first["model_sha256"]
        )
    return fallback or ModelInfo(name="none", version="none", sha256="none")


def activity_outcomes(phrase_results: pa.Table, errors: pa.Table) -> list[ActivityOutcome]:
    """Per activity: phrases, errored phrases, processing time and alignment failures."""
    scored = phrase_results.select(["activity_id"]).append_column(
        "total_ms",
        pc.add(
            pc.fill_null(phrase_results.column("inference_ms").cast(pa.float64()), 0.0),
            pc.fill_null(phrase_results.column("alignment_ms").cast(pa.float64()), 0.0),
        ),
    )
    scored = scored.append_column(
        "align_failed",
        pc.fill_null(
            pc.not_equal(phrase_results.column("alignment_method"), "ctc_forced"), True
        ).cast(pa.int64()),
    )
    scored = scored.append_column("errored", pa.array([0] * scored.num_rows, pa.int64()))
    failed = errors.select(["activity_id"])
    failed = failed.append_column("total_ms", pa.array([0.0] * failed.num_rows, pa.float64()))
    failed = failed.append_column(
        "align_failed",
        pc.fill_null(pc.equal(errors.column("stage"), Stage.ALIGNMENTS.value), False).cast(
            pa.int64()
        ),
    )
    failed = failed.append_column("errored", pa.array([1] * failed.num_rows, pa.int64()))
    per_activity = (
        pa.concat_tables([scored, failed.cast(scored.schema)])
        .group_by("activity_id")
        .aggregate(
            [
                ("activity_id", "count"),
                ("errored", "sum"),
                ("total_ms", "sum"),
                ("align_failed", "sum"),
            ]
        )
        .sort_by("activity_id")
    )
    return [
        ActivityOutcome(
            activity_id=str(row["activity_id"]),
            phrases=int(row["activity_id_count"]),
            phrases_errored=int(row["errored_sum"]),
            total_ms=float(row["total_ms_sum"]),
            align_failures=int(row["align_failed_sum"]),
        )
        for row in per_activity.to_pylist()
    ]


def read_ledger(store: ObjectStore, manifest: PartitionManifest) -> pa.Table | None:
    """The ledger the committed partition names, or None (committed before the ledger existed)."""
    if manifest.ledger is None or not store.exists(manifest.ledger):
        return None
    return store.read_table(manifest.ledger, LEDGER_SCHEMA)


def verify_partition(
    store: ObjectStore, partition_key: str, expected: list[tuple[str, int]] | None = None
) -> CommitVerification:
    """Exactly-once check of a committed partition against its ledger.

    `expected` defaults to the phrases of the partition's activities stage table (every catalog
    row of the day, rejected ones included).
    """
    payload = store.read_committed(result_prefix("letter_scores", partition_key))
    if payload is None:
        raise LookupError(f"letter_scores {partition_key} is not committed")
    manifest = PartitionManifest.model_validate(payload)
    if expected is None:
        expected = phrase_keys(
            store.read_table(stage_table_key(Stage.ACTIVITIES, partition_key), ACTIVITIES_SCHEMA)
        )
    return verify_commit(
        expected,
        manifest.run_id,
        store.read_table(manifest.files["phrase_results"], RESULT_SCHEMAS["phrase_results"]),
        store.read_table(manifest.files["errors"], RESULT_SCHEMAS["errors"]),
        read_ledger(store, manifest),
    )


PREVIEW_COLUMNS = [
    "activity_id",
    "phrase_index",
    "letter_index",
    "expected",
    "recognized",
    "status",
    "confidence",
]


def _misread_first(letters: pa.Table, limit: int) -> pa.Table:
    not_correct_first = pc.equal(letters.column("status"), "correct")
    confidence = pc.fill_null(letters.column("confidence").cast(pa.float64()), 0.0)
    keyed = letters.append_column("_correct", not_correct_first).append_column(
        "_confidence", confidence
    )
    order = pc.sort_indices(
        keyed, sort_keys=[("_correct", "ascending"), ("_confidence", "ascending")]
    )
    return letters.take(order[:limit])


def misread_first_preview(
    letters: pa.Table | Iterable[pa.RecordBatch], limit: int = 10
) -> list[dict[str, object]]:
    """Up to `limit` letter rows, those not read correctly first (lowest confidence first).

    The first ten rows of a good day are ten correct letters, which tell a reviewer nothing.
    Batches are reduced to their own first `limit` as they come (a stable sort, so ties keep
    table order), so a day of letters is never held whole.
    """
    batches = letters.to_batches() if isinstance(letters, pa.Table) else letters
    best: pa.Table | None = None
    for batch in batches:
        part = _misread_first(pa.Table.from_batches([batch]).select(PREVIEW_COLUMNS), limit)
        best = part if best is None else _misread_first(pa.concat_tables([best, part]), limit)
    return [] if best is None else best.to_pylist()


def _location(uri: str) -> dg.MetadataValue:
    """A local path as `path` metadata, an object-store URI as a `url` (the UI links both)."""
    if uri.startswith("file://"):
        return dg.MetadataValue.path(uri.removeprefix("file://"))
    if "://" in uri:
        return dg.MetadataValue.url(uri)
    return dg.MetadataValue.path(uri)


def build_letter_scores(
    store: ObjectStore, partition_key: str, run_id: str, fallback_model: ModelInfo | None = None
) -> tuple[StageSummary, PartitionManifest]:
    """Reconcile the partition's counts, then stage and commit the three result tables."""
    summary = StageSummary(Stage.LETTER_SCORES, partition_key)
    started = time.perf_counter()
    # The fencing token: the commit below succeeds only if no other run commits in between.
    fence = store.run_fence(partition_key, run_id)
    phrases_in = store.open_table(stage_table_key(Stage.ACTIVITIES, partition_key)).num_rows
    # Phrase and error tables are read whole (a few columns per phrase, as Arrow); the letter
    # table, four rows per phrase, streams through the counts below and is copied as bytes.
    tables = {
        name: store.read_table(stage_table_key(Stage.ALIGNMENTS, partition_key, name), schema)
        for name, schema in RESULT_SCHEMAS.items()
        if name != "letter_scores"
    }
    scored = tables["phrase_results"].num_rows
    errored = tables["errors"].num_rows
    if phrases_in != scored + errored:
        raise ReconciliationError(
            f"{partition_key}: {phrases_in} phrases in, {scored} scored + {errored} errored"
        )
    model = _partition_model(tables["phrase_results"], fallback_model)
    letters = store.open_table(
        stage_table_key(Stage.ALIGNMENTS, partition_key, "letter_scores"),
        RESULT_SCHEMAS["letter_scores"],
    )
    statuses: Counter[str] = Counter()

    def letter_batches() -> Iterator[pa.RecordBatch]:
        for batch in letters.batches(16384):
            statuses.update(value_counts(batch.column("status")))
            yield batch

    preview = misread_first_preview(letter_batches())
    staged: dict[str, str] = {}
    stage_root = staging_prefix(run_id, partition_key)
    for name in RESULT_TABLES:
        staged[name] = f"{stage_root}/{name}.parquet"
        # The stage tables are already the result tables' bytes (same schemas, same writer).
        store.copy(stage_table_key(Stage.ALIGNMENTS, partition_key, name), staged[name])
    committed_at = datetime.now(UTC)
    # The ledger lands before `_SUCCESS` names it: a committed partition always has its ledger,
    # and a crash in between leaves only a ledger file no `_SUCCESS` points to (history).
    ledger = ledger_key(partition_key, run_id)
    store.write_table(
        ledger,
        ledger_table(run_id, model, tables["phrase_results"], tables["errors"], committed_at),
    )
    manifest = PartitionManifest(
        partition=partition_key,
        run_id=run_id,
        committed_at=committed_at,
        files={},
        row_counts={
            "letter_scores": letters.num_rows,
            "phrase_results": scored,
            "errors": errored,
        },
        model=model,
        phrases_in=phrases_in,
        phrases_scored=scored,
        phrases_errored=errored,
        ledger=ledger,
    )
    with span(
        "asr.commit",
        {
            **store.trace_attributes(),
            "asr.partition": partition_key,
            "asr.key_count": len(RESULT_TABLES) + 2,  # data files, the manifest, ledger
            "asr.model": f"{model.name}@{model.version}",
        },
    ):
        final_keys = store.commit_partition(
            staged,
            {name: result_prefix(name, partition_key) for name in RESULT_TABLES},
            manifest.model_dump(mode="json"),
            fence=fence,
        )
    manifest = manifest.model_copy(update={"files": final_keys, "generation": fence.generation + 1})
    # The commit replaced everything under the partition prefix; delete the marker explicitly
    # too, so a store whose commit keeps unknown objects cannot leave a stale verdict behind.
    if store.exists(quarantine_key(partition_key)):
        store.delete(quarantine_key(partition_key))
        log.info("quarantine_cleared_by_commit", partition=partition_key, run_id=run_id)

    expected = letters.num_rows - statuses.get("inserted", 0)
    summary.phrases_in = phrases_in
    summary.phrases_ok = scored
    summary.phrases_errored = errored
    summary.count_errors(tables["errors"].column("reason_code").to_pylist())
    summary.extra["activities"] = len(
        set(tables["phrase_results"].column("activity_id").to_pylist())
        | set(tables["errors"].column("activity_id").to_pylist())
    )
    summary.extra["letters"] = expected
    summary.extra["letters_by_status"] = dict(sorted(statuses.items()))
    summary.extra["share_correct"] = (
        round(statuses.get("correct", 0) / expected, 4) if expected else 0.0
    )
    if scored:
        summary.extra["mean_phrase_accuracy"] = round(
            float(pc.mean(tables["phrase_results"].column("accuracy")).as_py()), 4
        )
    summary.extra["model"] = f"{model.name}@{model.version} ({model.sha256[:12]})"
    summary.extra["result_path"] = _location(
        store.uri(result_prefix("letter_scores", partition_key))
    )
    summary.timings_ms["commit"] = (time.perf_counter() - started) * 1000
    summary.row_count = letters.num_rows
    summary.extra["misread_letters"] = letters.num_rows - statuses.get("correct", 0)
    summary.preview = preview
    summary.extra["ledger"] = _location(store.uri(ledger))
    summary.check_reconciles()
    engines = sorted(set(tables["phrase_results"].column("engine").to_pylist()))
    emit_activities(
        stage=Stage.LETTER_SCORES.value,
        partition=partition_key,
        correlation_id=run_id,
        model=f"{model.name}@{model.version}",
        device=",".join(str(e) for e in engines) or None,
        activities=activity_outcomes(tables["phrase_results"], tables["errors"]),
    )
    log.info(
        "partition_committed",
        partition=partition_key,
        status="committed",
        phrases_in=phrases_in,
        phrases_scored=scored,
        phrases_errored=errored,
        model=f"{model.name}@{model.version}",
    )
    return summary, manifest


@letter_scoring_asset(
    deps=["alignments"],
    kinds={"parquet"},
    description="Result partition: letter_scores, phrase_results and errors Parquet, committed "
    "with a _SUCCESS manifest written last.",
)
def letter_scores(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
    def build(key: str, record: PartitionRecord) -> StageSummary:
        summary, manifest = build_letter_scores(store, key, context.run.run_id)
        record.model = f"{manifest.model.name}@{manifest.model.version}"
        record.attributes.update(store.trace_attributes())
        return summary

    with stage_scope(context, Stage.LETTER_SCORES):
        summaries = each_partition(context, Stage.LETTER_SCORES, build)
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
