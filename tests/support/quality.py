"""Builders for quality-gate tests: a clean generated day, in-memory partitions, defects.

`clean_day` reuses the standard day's good phrases (no error rows), so its error share is zero
and the default gates pass on it; the in-memory builders make valid tables in the result and stage
contracts that a test then breaks one way at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asr_assets.core.models import ModelInfo, PartitionManifest
from asr_assets.core.storage import RESULT_TABLES, result_prefix, staging_prefix
from asr_assets.core.tables import ACTIVITIES_SCHEMA, RESULT_SCHEMAS
from asr_assets.resources.object_store import ObjectStore
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

SHA = "a" * 64


def clean_day(root: Path, day: date) -> list[PhraseSpec]:
    """Five phrases in two activities, all scoreable: the standard day without its bad inputs."""
    long_recording = np.concatenate(
        [tone(1.2, freq=200), tone(0.3, level=0.0), tone(1.5, freq=260)]
    )
    phrases = [
        PhraseSpec("act-1", 0, "b d p", wav_bytes(tone(1.5)), "audio/act-1/0.wav"),
        PhraseSpec(
            "act-1",
            1,
            "m n",
            wav_bytes(tone(1.0, rate=44_100, freq=300), rate=44_100),
            "audio/act-1/1.wav",
        ),
        PhraseSpec(
            "act-1", 2, "c k s e", wav_bytes(tone(2.0, freq=180), fmt="FLAC"), "audio/act-1/2.flac"
        ),
        PhraseSpec(
            "act-2",
            0,
            "a b",
            wav_bytes(long_recording),
            "audio/act-2/full.wav",
            tenant_id="tenant-b",
            audio_start_s=0.0,
            audio_end_s=1.2,
        ),
        PhraseSpec(
            "act-2",
            1,
            "g j",
            None,
            "audio/act-2/full.wav",
            tenant_id="tenant-b",
            audio_start_s=1.5,
            audio_end_s=3.0,
        ),
    ]
    write_day(root, day, phrases)
    return phrases


# --- in-memory result partitions ----------------------------------------------------------------

PHRASES = (
    ("act-1", 0, "b d p"),
    ("act-1", 1, "m n"),
    ("act-2", 0, "a b"),
    ("act-2", 1, "g j"),
    ("act-2", 2, "c k s e"),
)
ERRORS = (("act-3", 0, "audio_empty"),)


def result_partition(
    partition_key: str = "2026-11-27",
    phrases: Sequence[tuple[str, int, str]] = PHRASES,
    errors: Sequence[tuple[str, int, str]] = ERRORS,
    *,
    duration_s: float = 1.5,
    status: str = "correct",
) -> tuple[PartitionManifest, dict[str, pa.Table]]:
    """A valid committed partition: every expected letter scored, one insertion, one error."""
    day = date.fromisoformat(partition_key)
    model = {"model_name": "tiny", "model_version": "1", "model_sha256": SHA}
    letters: list[dict[str, object]] = []
    phrase_rows: list[dict[str, object]] = []
    for activity_id, phrase_index, text in phrases:
        expected = text.split(" ")
        for index, letter in enumerate(expected):
            letters.append(
                {
                    "activity_id": activity_id,
                    "phrase_index": phrase_index,
                    "letter_index": index,
                    "expected": letter,
                    "recognized": letter,
                    "status": status,
                    "confidence": 0.9,
                    "start_s": 0.2 * index,
                    "end_s": 0.2 * index + 0.15,
                    "alignment_score": 0.8,
                    "unaligned_reason": None,
                    **model,
                }
            )
        phrase_rows.append(
            {
                "activity_id": activity_id,
                "phrase_index": phrase_index,
                "tenant_id": "tenant-a",
                "activity_date": day,
                "expected_text": text,
                "transcript": text,
                "n_expected": len(expected),
                "n_correct": len(expected) if status == "correct" else 0,
                "n_inserted": 0,
                "accuracy": 1.0 if status == "correct" else 0.0,
                "duration_s": duration_s,
                "inference_ms": 5.0,
                "alignment_ms": 1.0,
                "alignment_method": "ctc_forced",
                "engine": "local",
                **model,
            }
        )
    if letters:
        first = dict(letters[0])
        first.update(
            letter_index=1,
            expected=None,
            recognized="z",
            status="inserted",
            confidence=0.4,
            start_s=0.16,
            end_s=0.18,
            alignment_score=None,
        )
        letters.append(first)
    error_rows = [
        {
            "activity_id": activity_id,
            "phrase_index": phrase_index,
            "tenant_id": "tenant-a",
            "activity_date": day,
            "stage": "phrase_audio",
            "reason_code": reason,
            "message": "generated",
        }
        for activity_id, phrase_index, reason in errors
    ]
    tables = {
        "letter_scores": pa.Table.from_pylist(letters, schema=RESULT_SCHEMAS["letter_scores"]),
        "phrase_results": pa.Table.from_pylist(
            phrase_rows, schema=RESULT_SCHEMAS["phrase_results"]
        ),
        "errors": pa.Table.from_pylist(error_rows, schema=RESULT_SCHEMAS["errors"]),
    }
    manifest = PartitionManifest(
        partition=partition_key,
        run_id="run-1",
        committed_at=datetime(2026, 11, 28, tzinfo=UTC),
        files={name: f"{result_prefix(name, partition_key)}/part-0.parquet" for name in tables},
        row_counts={name: table.num_rows for name, table in tables.items()},
        model=ModelInfo(name="tiny", version="1", sha256=SHA),
        phrases_in=len(phrase_rows) + len(error_rows),
        phrases_scored=len(phrase_rows),
        phrases_errored=len(error_rows),
    )
    return manifest, tables


def replace_rows(table: pa.Table, edit: Callable[[list[dict[str, object]]], None]) -> pa.Table:
    """The same table after `edit` mutated its rows (as dicts) in place."""
    rows = table.to_pylist()
    edit(rows)
    return pa.Table.from_pylist(rows, schema=table.schema)


def commit_partition(
    store: ObjectStore,
    partition_key: str,
    tables: dict[str, pa.Table],
    manifest: PartitionManifest,
    run_id: str = "run-1",
) -> None:
    """Commit tables the way letter_scores does (staged, then `_SUCCESS` last)."""
    staged = {}
    for name in RESULT_TABLES:
        staged[name] = f"{staging_prefix(run_id, partition_key)}/{name}.parquet"
        store.write_table(staged[name], tables[name])
    store.commit_partition(
        staged,
        {name: result_prefix(name, partition_key) for name in RESULT_TABLES},
        manifest.model_copy(update={"run_id": run_id}).model_dump(mode="json"),
    )


def scores_partition(
    partition_key: str, accuracies: Sequence[float], confidences: Sequence[float]
) -> tuple[PartitionManifest, dict[str, pa.Table]]:
    """A partition whose phrase accuracies and letter confidences are given (for drift tests)."""
    manifest, tables = result_partition(partition_key, phrases=(), errors=())
    day = date.fromisoformat(partition_key)
    phrases = [
        {
            "activity_id": f"act-{i}",
            "phrase_index": 0,
            "tenant_id": "t",
            "activity_date": day,
            "expected_text": "a",
            "transcript": "a",
            "n_expected": 1,
            "n_correct": 1,
            "n_inserted": 0,
            "accuracy": float(value),
            "duration_s": 1.0,
            "inference_ms": 1.0,
            "alignment_ms": 1.0,
            "alignment_method": "ctc_forced",
            "engine": "local",
            "model_name": "tiny",
            "model_version": "1",
            "model_sha256": SHA,
        }
        for i, value in enumerate(accuracies)
    ]
    letters = [
        {
            "activity_id": "act-0",
            "phrase_index": 0,
            "letter_index": i,
            "expected": "a",
            "recognized": "a",
            "status": "correct",
            "confidence": float(value),
            "model_name": "tiny",
            "model_version": "1",
            "model_sha256": SHA,
        }
        for i, value in enumerate(confidences)
    ]
    tables = {
        **tables,
        "phrase_results": pa.Table.from_pylist(phrases, schema=RESULT_SCHEMAS["phrase_results"]),
        "letter_scores": pa.Table.from_pylist(letters, schema=RESULT_SCHEMAS["letter_scores"]),
    }
    return manifest, tables


# --- activities stage tables --------------------------------------------------------------------


def activities_stage(partition_key: str = "2026-11-27", rows: int = 10) -> pa.Table:
    """A valid activities stage table: `rows` accepted phrases over a few activities."""
    day = date.fromisoformat(partition_key)
    records = [
        {
            "activity_id": f"act-{i // 3}",
            "phrase_index": i % 3,
            "tenant_id": "tenant-a",
            "activity_date": day,
            "expected_text": "b d p",
            "audio_key": f"audio/act-{i // 3}/{i % 3}.wav",
            "audio_start_s": None,
            "audio_end_s": None,
            "created_at": datetime(day.year, day.month, day.day, 9, tzinfo=UTC),
            "error_stage": None,
            "error_reason": None,
            "error_message": None,
        }
        for i in range(rows)
    ]
    return pa.Table.from_pylist(records, schema=ACTIVITIES_SCHEMA)


def rewrite_parquet(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    """Tamper with a stage table on disk (how the e2e tests inject defects mid-pipeline)."""
    pq.write_table(edit(pq.read_table(path)), path)
