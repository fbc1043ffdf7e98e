"""`activities`: the partition's phrases from the catalog, validated row by row."""

import time
from collections import Counter
from datetime import date

import dagster as dg
from pydantic import Field, ValidationError

from asr_assets.assets.common import (
    StageSummary,
    save_sensitive_digests,
    stage_error,
    summary_metadata,
)
from asr_assets.assets.instrumentation import each_partition, stage_scope
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.core.errors import ReasonCode, Stage
from asr_assets.core.models import ActivityPhrase
from asr_assets.core.storage import (
    DEFAULT_AUDIO_PREFIXES,
    UnsafeKeyError,
    confine_audio_key,
    partition_date,
    stage_table_key,
    validate_key,
)
from asr_assets.core.tables import ACTIVITIES_SCHEMA, to_table
from asr_assets.observability.logging import get_logger, register_sensitive_values
from asr_assets.resources.catalog import (
    ActivityCatalog,
    CatalogFileError,
    EmptyCatalogPartitionError,
)
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


# Rows whose phrase_index is missing or not an integer get a distinct negative index far below
# any real one, so two such rows of one activity stay two rows (each with its own error) instead
# of colliding on one key and failing the completeness gate for the whole day.
_SYNTHETIC_INDEX_BASE = -1_000_000
DEFAULT_MAX_EXPECTED_LETTERS = 64


def _phrase_index(value: object, number: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _SYNTHETIC_INDEX_BASE - number


def _file_error_row(partition_key: str, error: CatalogFileError) -> dict[str, object]:
    """One error row stands for an unreadable catalog file: its phrases cannot be listed."""
    return {
        "activity_id": f"catalog-file:{error.name}",
        "phrase_index": -1,
        "tenant_id": None,
        "activity_date": partition_date(partition_key),
        "expected_text": None,
        "audio_key": None,
        "audio_start_s": None,
        "audio_end_s": None,
        "created_at": None,
        **stage_error(Stage.ACTIVITIES, ReasonCode.CATALOG_FILE_UNREADABLE, error.message),
    }


def _row_error(
    record: dict[str, object],
    issues: list[str],
    day: date,
    max_expected_letters: int,
    audio_prefixes: list[str] | tuple[str, ...],
) -> tuple[ReasonCode, str] | None:
    """The reason a catalog row cannot be scored, or None when it is a valid phrase."""
    if issues:
        return ReasonCode.MALFORMED_ROW, f"values of {sorted(issues)} do not fit the data contract"
    try:
        phrase = ActivityPhrase.model_validate(record)
    except ValidationError as exc:
        return _reason_for(exc), _describe(exc)
    if phrase.activity_date != day:
        return (
            ReasonCode.ACTIVITY_DATE_MISMATCH,
            f"activity_date {phrase.activity_date.isoformat()} differs from the catalog folder's "
            f"day {day.isoformat()}",
        )
    letters = len(phrase.expected_letters)
    if letters > max_expected_letters:
        return (
            ReasonCode.EXPECTED_TEXT_TOO_LONG,
            f"{letters} expected letters exceed the limit of {max_expected_letters}",
        )
    try:
        validate_key(phrase.audio_key)
        confine_audio_key(phrase.audio_key, phrase.tenant_id, audio_prefixes)
    except UnsafeKeyError as exc:
        return ReasonCode.UNSAFE_AUDIO_KEY, str(exc)
    return None


def build_activities(
    catalog: ActivityCatalog,
    store: ObjectStore,
    partition_key: str,
    max_expected_letters: int = DEFAULT_MAX_EXPECTED_LETTERS,
    audio_prefixes: list[str] | tuple[str, ...] = DEFAULT_AUDIO_PREFIXES,
    allow_empty: bool = False,
) -> StageSummary:
    """Query the catalog and write the stage table: one row per catalog row, errors included.

    Per-row isolation: a bad row (or an unreadable file) becomes error rows of its own; every
    key that more than one catalog row claims becomes `duplicate_phrase` for all of those rows,
    so no key is both scored and errored and the rest of the day is unaffected.

    A day without catalog rows fails unless `allow_empty`: an empty result is far more often a
    wrong data root or a day not loaded yet than a day nobody read aloud, and scoring it would
    commit an empty partition that every later reader takes for a real, quiet day.
    """
    summary = StageSummary(Stage.ACTIVITIES, partition_key)
    started = time.perf_counter()
    fetched = catalog.fetch_activity_rows(partition_key)
    raw = fetched.table
    summary.timings_ms["query"] = (time.perf_counter() - started) * 1000
    if raw.num_rows == 0 and not fetched.file_errors and not allow_empty:
        raise EmptyCatalogPartitionError(
            f"no catalog rows for {partition_key} in {catalog.describe_location(partition_key)}"
            " (check ASR_DATA_ROOT / the catalog; set allow_empty_day to score an empty day)"
        )
    # The one stage that sees student ids: from here on, no log record of this process can
    # carry one, whatever a later change logs by mistake.
    student_ids = raw.column("student_id").to_pylist()
    register_sensitive_values(student_ids)
    save_sensitive_digests(store, partition_key, student_ids)
    day = partition_date(partition_key)
    records = raw.to_pylist()
    keys = [
        (
            record.get("activity_id") or f"<row {number}>",
            _phrase_index(record.get("phrase_index"), number),
        )
        for number, record in enumerate(records)
    ]
    claims = Counter(keys)
    rows: list[dict[str, object]] = []
    for number, record in enumerate(records):
        activity_id, phrase_index = keys[number]
        base = {
            "activity_id": activity_id,
            "phrase_index": phrase_index,
            "tenant_id": record.get("tenant_id"),
            "activity_date": record.get("activity_date"),
            "expected_text": record.get("expected_text"),
            "audio_key": record.get("audio_key"),
            "audio_start_s": record.get("audio_start_s"),
            "audio_end_s": record.get("audio_end_s"),
            "created_at": record.get("created_at"),
        }
        failure = _row_error(
            record,
            fetched.row_issues.get(number, []),
            day,
            max_expected_letters,
            audio_prefixes,
        )
        if failure is None and claims[keys[number]] > 1:
            failure = (
                ReasonCode.DUPLICATE_PHRASE,
                f"{claims[keys[number]]} catalog rows share this activity_id and phrase_index; "
                "none of them is scored",
            )
        if failure is None:
            rows.append(base)
            continue
        reason, message = failure
        log.debug(
            "phrase_rejected",
            activity_id=activity_id,
            phrase_index=phrase_index,
            status="errored",
            reason=reason.value,
        )
        rows.append({**base, **stage_error(Stage.ACTIVITIES, reason, message)})
    rows.extend(_file_error_row(partition_key, error) for error in fetched.file_errors)
    table = to_table(rows, ACTIVITIES_SCHEMA)
    store.write_table(stage_table_key(Stage.ACTIVITIES, partition_key), table)
    summary.phrases_in = len(rows)
    summary.count_errors(row.get("error_reason") for row in rows)  # type: ignore[misc]
    summary.phrases_errored = sum(summary.errors_by_reason.values())
    summary.phrases_ok = summary.phrases_in - summary.phrases_errored
    summary.extra["activities"] = len({row["activity_id"] for row in rows})
    summary.extra["tenants"] = len({row["tenant_id"] for row in rows if row["tenant_id"]})
    if fetched.file_errors:
        summary.extra["catalog_files_unreadable"] = [error.name for error in fetched.file_errors]
    summary.preview = [
        {k: row[k] for k in ("activity_id", "phrase_index", "tenant_id", "expected_text")}
        for row in rows[:10]
    ]
    summary.check_reconciles()
    return summary


class ActivitiesConfig(dg.Config):
    """Row limits of the activities stage (launchpad or run config)."""

    max_expected_letters: int = Field(
        default=DEFAULT_MAX_EXPECTED_LETTERS,
        ge=1,
        description="Longer expected_text rows error `expected_text_too_long` instead of being "
        "scored (one very long row would otherwise dominate letter-weighted gates).",
    )
    audio_prefixes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_AUDIO_PREFIXES),
        description="Key prefixes audio may be read from; `{tenant}` stands for the row's tenant.",
    )
    allow_empty_day: bool = Field(
        default=False,
        description="Score a day without catalog rows (`asr score --allow-empty-day`) instead of "
        "failing it as a likely wrong data root.",
    )


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
            lambda key, _: build_activities(
                catalog,
                store,
                key,
                config.max_expected_letters,
                config.audio_prefixes,
                allow_empty=config.allow_empty_day,
            ),
        )
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
