"""What the Dagster UI shows about each asset beyond its data: owners, tags, column schemas, code
references and the freshness expectation of `letter_scores`.

Kept in one place, applied to the assets when the definitions are built, so each stage module
stays about its work. The column schemas come from the Arrow table contracts in `core/tables.py`
(the ones the stages write and the quality gates check), so the Columns tab cannot drift from
the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import dagster as dg
import pyarrow as pa

from asr_assets.core.tables import (
    ACTIVITIES_SCHEMA,
    LETTER_SCORES_SCHEMA,
    PHRASE_AUDIO_SCHEMA,
    TRANSCRIPTS_SCHEMA,
)

OWNERS = ["team:asr-platform"]

#: Columns that identify a child's activity (and through the catalog, the child): tagged `pii`
#: on the column so a data catalog or a redaction rule can find them.
PII_COLUMNS = frozenset({"activity_id", "tenant_id"})

#: `pii` says what personal data an asset holds. `activities` reads the catalog's student ids
#: (dropped from the stage table, but registered for log redaction); every stage table is keyed
#: by activity id; `phrase_audio` also holds the children's voices.
PII_TAGS: Mapping[str, str] = {
    "activities": "student_id",
    "phrase_audio": "voice",
    "transcripts": "activity_id",
    "alignments": "activity_id",
    "letter_scores": "activity_id",
    "published_scores": "activity_id",
    "slo_report": "none",  # aggregates over runs and metrics only
}

COLUMN_DESCRIPTIONS: Mapping[str, str] = {
    "activity_id": "Activity the phrase belongs to (one student's reading session).",
    "phrase_index": "Position of the phrase in its activity.",
    "tenant_id": "Customer (school district) the activity belongs to.",
    "activity_date": "UTC day of the activity: the partition.",
    "expected_text": "Expected letters, lower-case a-z separated by single spaces.",
    "audio_key": "Store key of the recording.",
    "audio_start_s": "Start of the phrase within a shared recording (null: whole file).",
    "audio_end_s": "End of the phrase within a shared recording (null: whole file).",
    "created_at": "When the catalog row was created (UTC).",
    "error_stage": "Stage that rejected the phrase (null: not rejected).",
    "error_reason": "Reason code (core/errors.py) of the rejection.",
    "error_message": "Human-readable detail of the rejection (never a student id).",
    "clip_key": "Store key of the decoded 16 kHz clip.",
    "clip_sha256": "Content hash of the clip (cache key).",
    "duration_s": "Clip duration in seconds.",
    "letter_index": "Index into the expected letters; for inserted rows the next expected one.",
    "expected": "Expected letter (null when inserted).",
    "recognized": "Recognized letter (null when deleted).",
    "status": "correct, substituted, deleted, inserted or unaligned.",
    "confidence": "Model confidence in [0, 1]; for deleted, 1 - the expected letter's support.",
    "start_s": "Letter span start from CTC forced alignment (seconds).",
    "end_s": "Letter span end from CTC forced alignment (seconds).",
    "alignment_score": "Mean posterior of the expected letter over its aligned frames.",
    "unaligned_reason": "Why forced alignment could not run for the phrase.",
    "transcript": "Greedy CTC transcript.",
    "engine": "Inference engine that produced the emissions.",
    "inference_ms": "Inference time attributed to the phrase.",
    "model_name": "Model that produced the row.",
    "model_version": "Model version.",
    "model_sha256": "sha256 of the model's SHA256SUMS file.",
}

COLUMN_SCHEMAS: Mapping[str, pa.Schema] = {
    "activities": ACTIVITIES_SCHEMA,
    "phrase_audio": PHRASE_AUDIO_SCHEMA,
    "transcripts": TRANSCRIPTS_SCHEMA,
    "alignments": LETTER_SCORES_SCHEMA,
    "letter_scores": LETTER_SCORES_SCHEMA,
}

#: A day is scored the day after it (the partitions end one day ahead, `end_offset=1`): warn
#: when no day has been committed for 30 hours, fail after 48.
LETTER_SCORES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)
)


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    """A Dagster column schema from an Arrow contract: names, Arrow types, descriptions."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=COLUMN_DESCRIPTIONS.get(field.name),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
                tags={"pii": ""} if field.name in PII_COLUMNS else None,
            )
            for field in schema
        ]
    )


def _describe(spec: dg.AssetSpec) -> dg.AssetSpec:
    name = spec.key.path[-1]
    metadata: dict[str, object] = {}
    if name in COLUMN_SCHEMAS:
        metadata["dagster/column_schema"] = table_schema(COLUMN_SCHEMAS[name])
    described = spec.merge_attributes(
        owners=OWNERS,
        tags={"pii": PII_TAGS[name]} if name in PII_TAGS else {},
        metadata=metadata,
    )
    if name == "letter_scores":
        described = described.replace_attributes(freshness_policy=LETTER_SCORES_FRESHNESS)
    return described


def described_assets(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with owners, `pii` tags, column schemas, freshness and code references."""
    mapped = dg.map_asset_specs(_describe, list(assets))
    return list(dg.with_source_code_references(mapped))  # type: ignore[arg-type]
