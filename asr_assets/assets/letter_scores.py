"""`letter_scores`: the result partition, staged and then committed with a `_SUCCESS` manifest."""

import time
from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from asr_assets.assets.common import ReconciliationError, StageSummary, summary_metadata
from asr_assets.assets.partitions import daily_backfill_policy, daily_partitions
from asr_assets.core.errors import Stage
from asr_assets.core.models import ModelInfo, PartitionManifest
from asr_assets.core.storage import (
    RESULT_TABLES,
    result_prefix,
    stage_table_key,
    staging_prefix,
)
from asr_assets.core.tables import ACTIVITIES_SCHEMA, RESULT_SCHEMAS
from asr_assets.observability.logging import get_logger
from asr_assets.resources.object_store import ObjectStore

log = get_logger(__name__)


def _partition_model(phrase_table: pa.Table, fallback: ModelInfo | None) -> ModelInfo:
    if phrase_table.num_rows:
        first = phrase_table.slice(0, 1).to_pylist()[0]
        return ModelInfo(
            name=first["model_name"], version=first["model_version"], sha256=first["model_sha256"]
        )
    return fallback or ModelInfo(name="none", version="none", sha256="none")


def build_letter_scores(
    store: ObjectStore, partition_key: str, run_id: str, fallback_model: ModelInfo | None = None
) -> tuple[StageSummary, PartitionManifest]:
    """Reconcile the partition's counts, then stage and commit the three result tables."""
    summary = StageSummary(Stage.LETTER_SCORES, partition_key)
    started = time.perf_counter()
    phrases_in = store.read_table(
        stage_table_key(Stage.ACTIVITIES, partition_key), ACTIVITIES_SCHEMA
    ).num_rows
    tables = {
        name: store.read_table(stage_table_key(Stage.ALIGNMENTS, partition_key, name), schema)
        for name, schema in RESULT_SCHEMAS.items()
    }
    scored = tables["phrase_results"].num_rows
    errored = tables["errors"].num_rows
    if phrases_in != scored + errored:
        raise ReconciliationError(
            f"{partition_key}: {phrases_in} phrases in, {scored} scored + {errored} errored"
        )
    model = _partition_model(tables["phrase_results"], fallback_model)
    staged: dict[str, str] = {}
    stage_root = staging_prefix(run_id, partition_key)
    for name in RESULT_TABLES:
        staged[name] = f"{stage_root}/{name}.parquet"
        store.write_table(staged[name], tables[name])
    manifest = PartitionManifest(
        partition=partition_key,
        run_id=run_id,
        committed_at=datetime.now(UTC),
        files={},
        row_counts={name: tables[name].num_rows for name in RESULT_TABLES},
        model=model,
        phrases_in=phrases_in,
        phrases_scored=scored,
        phrases_errored=errored,
    )
    final_keys = store.commit_partition(
        staged,
        {name: result_prefix(name, partition_key) for name in RESULT_TABLES},
        manifest.model_dump(mode="json"),
    )
    manifest = manifest.model_copy(update={"files": final_keys})

    letters = tables["letter_scores"]
    statuses = Counter(letters.column("status").to_pylist())
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
    summary.extra["result_path"] = store.uri(result_prefix("letter_scores", partition_key))
    summary.timings_ms["commit"] = (time.perf_counter() - started) * 1000
    summary.preview = (
        letters.slice(0, 10)
        .select(
            [
                "activity_id",
                "phrase_index",
                "letter_index",
                "expected",
                "recognized",
                "status",
                "confidence",
            ]
        )
        .to_pylist()
    )
    summary.check_reconciles()
    log.info(
        "partition_committed",
        stage=Stage.LETTER_SCORES.value,
        partition=partition_key,
        phrases_in=phrases_in,
        phrases_scored=scored,
        phrases_errored=errored,
    )
    return summary, manifest


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    deps=["alignments"],
    kinds={"parquet"},
    group_name="letter_scoring",
    description="Result partition: letter_scores, phrase_results and errors Parquet, committed "
    "with a _SUCCESS manifest written last.",
)
def letter_scores(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
    summaries = [
        build_letter_scores(store, key, context.run.run_id)[0] for key in context.partition_keys
    ]
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
