"""`activities`: the partition's phrases from the catalog, validated row by row."""

import time

import dagster as dg
from pydantic import ValidationError

from asr_assets.assets.common import StageSummary, stage_error, summary_metadata
from asr_assets.assets.instrumentation import each_partition, stage_scope
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.core.errors import ReasonCode, Stage
from asr_assets.core.models import ActivityPhrase
from asr_assets.core.storage import UnsafeKeyError, stage_table_key, validate_key
from asr_assets.core.tables import ACTIVITIES_SCHEMA, to_table
from asr_assets.observability.logging import get_logger, register_sensitive_values
from asr_assets.resources.catalog import ActivityCatalog, EmptyCatalogPartitionError
from asr_assets.resources.inference import InferenceResource
from asr_assets.resources.object_store import ObjectStore
from asr_assets.resources.preflight import PreflightError, preflight

log = get_logger(__name__)


def _reason_for(exc: ValidationError) -> ReasonCode:
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    return (
        ReasonCode.INVALID_EXPECTED_TEXT if "expected_text" in fields else ReasonCode.MALFORMED_ROW
    )


def _describe(exc: ValidationError) -> str:
    # Field names and messages only: never echo values, which may hold student ids.
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


class ActivitiesConfig(dg.Config):
    """Run config of `activities` (launchpad, or `asr score --allow-empty-day`)."""

    allow_empty_day: bool = False


def build_activities(
    catalog: ActivityCatalog, store: ObjectStore, partition_key: str, allow_empty: bool = False
) -> StageSummary:
    """Query the catalog and write the stage table: one row per catalog row, errors included.

    A day without catalog rows fails unless `allow_empty`: an empty result is far more often a
    wrong data root or a day not loaded yet than a day nobody read aloud, and scoring it would
    commit an empty partition that every later reader takes for a real, quiet day.
    """
    summary = StageSummary(Stage.ACTIVITIES, partition_key)
    started = time.perf_counter()
    raw = catalog.fetch_activities(partition_key)
    summary.timings_ms["query"] = (time.perf_counter() - started) * 1000
    if raw.num_rows == 0 and not allow_empty:
        raise EmptyCatalogPartitionError(
            f"no catalog rows for {partition_key} in {catalog.describe_location(partition_key)}"
            " (check ASR_DATA_ROOT / the catalog; set allow_empty_day to score an empty day)"
        )
    # The one stage that sees student ids: from here on, no log record of this process can
    # carry one, whatever a later change logs by mistake.
    register_sensitive_values(raw.column("student_id").to_pylist())
    rows: list[dict[str, object]] = []
    seen: set[tuple[str, int]] = set()
    for number, record in enumerate(raw.to_pylist()):
        activity_id = record.get("activity_id") or f"<row {number}>"
        phrase_index = record.get("phrase_index")
        base = {
            "activity_id": activity_id,
            "phrase_index": phrase_index if isinstance(phrase_index, int) else -1,
            "tenant_id": record.get("tenant_id"),
            "activity_date": record.get("activity_date"),
            "expected_text": record.get("expected_text"),
            "audio_key": record.get("audio_key"),
            "audio_start_s": record.get("audio_start_s"),
            "audio_end_s": record.get("audio_end_s"),
            "created_at": record.get("created_at"),
        }
        try:
            phrase = ActivityPhrase.model_validate(record)
        except ValidationError as exc:
            reason = _reason_for(exc)
            log.debug(
                "phrase_rejected",
                activity_id=activity_id,
                phrase_index=base["phrase_index"],
                status="errored",
                reason=reason.value,
            )
            rows.append({**base, **stage_error(Stage.ACTIVITIES, reason, _describe(exc))})
            continue
        try:
            validate_key(phrase.audio_key)
        except UnsafeKeyError as exc:
            log.debug(
                "phrase_rejected",
                activity_id=phrase.activity_id,
                phrase_index=phrase.phrase_index,
                status="errored",
                reason=ReasonCode.UNSAFE_AUDIO_KEY.value,
            )
            rows.append(
                {**base, **stage_error(Stage.ACTIVITIES, ReasonCode.UNSAFE_AUDIO_KEY, str(exc))}
            )
            continue
        identity = (phrase.activity_id, phrase.phrase_index)
        if identity in seen:
            rows.append(
                {
                    **base,
                    **stage_error(
                        Stage.ACTIVITIES,
                        ReasonCode.DUPLICATE_PHRASE,
                        "another catalog row has the same activity_id and phrase_index",
                    ),
                }
            )
            continue
        seen.add(identity)
        rows.append(base)
    table = to_table(rows, ACTIVITIES_SCHEMA)
    store.write_table(stage_table_key(Stage.ACTIVITIES, partition_key), table)
    summary.phrases_in = len(rows)
    summary.count_errors(row.get("error_reason") for row in rows)  # type: ignore[misc]
    summary.phrases_errored = sum(summary.errors_by_reason.values())
    summary.phrases_ok = summary.phrases_in - summary.phrases_errored
    summary.extra["activities"] = len({row["activity_id"] for row in rows})
    summary.extra["tenants"] = len({row["tenant_id"] for row in rows if row["tenant_id"]})
    summary.preview = [
        {k: row[k] for k in ("activity_id", "phrase_index", "tenant_id", "expected_text")}
        for row in rows[:10]
    ]
    summary.check_reconciles()
    return summary


@letter_scoring_asset(
    kinds={"duckdb", "parquet"},
    description="The partition's phrases from the activity catalog, one row each, validated.",
)
def activities(
    context: dg.AssetExecutionContext,
    config: ActivitiesConfig,
    catalog: ActivityCatalog,
    store: ObjectStore,
    inference: InferenceResource,
) -> dg.MaterializeResult:
    permanent = (EmptyCatalogPartitionError, PreflightError)
    with stage_scope(context, Stage.ACTIVITIES, permanent=permanent):
        # Run start: a tampered model or a read-only data root fails here, in the first step,
        # not in `transcripts` after the catalog and audio work (the engine checks again).
        problems = preflight(
            {"catalog": catalog, "store": store, "inference": inference},
            list(context.partition_keys),
            allow_empty_day=config.allow_empty_day,
        )
        if problems:
            raise PreflightError(problems)
        summaries = each_partition(
            context,
            Stage.ACTIVITIES,
            lambda key, _: build_activities(catalog, store, key, config.allow_empty_day),
        )
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
