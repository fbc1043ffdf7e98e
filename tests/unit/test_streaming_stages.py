"""Stages stream a day through in chunks: the output equals the whole-day output, row for row.

Memory must not grow with the day (a 100k-phrase day held every stage's rows as Python dicts and
peaked at twice the RSS of a 1k-phrase day). These tests hold the chunked paths to the result of
processing the day at once, and the table sink to writing nothing until it is complete.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from asr_assets.assets.letter_scores import misread_first_preview
from asr_assets.assets.transcripts import TranscriptsConfig, build_transcripts
from asr_assets.core.errors import Stage
from asr_assets.core.models import ActivityResult, ModelInfo, PartitionManifest
from asr_assets.core.storage import stage_table_key
from asr_assets.core.tables import ERRORS_SCHEMA, PHRASE_RESULTS_SCHEMA, TRANSCRIPTS_SCHEMA
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.publisher import LocalJsonlPublisher, PublishReport
from tests.unit.test_stage_io_concurrency import (
    PARTITION,
    PHRASES,
    LetterCoveringEngine,
    write_phrase_audio,
)

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.int32())])


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path), min_free_bytes=0)


def test_table_writer_writes_row_groups_and_reads_back_in_batches(
    store: LocalObjectStore,
) -> None:
    rows = [{"key": f"k{i}", "value": i} for i in range(5)]
    with store.table_writer("t/a.parquet", SCHEMA, chunk_rows=2) as sink:
        sink.extend(rows)
        assert not store.exists("t/a.parquet")  # nothing is visible before the block ends
    assert sink.num_rows == 5
    source = store.open_table("t/a.parquet", SCHEMA)
    assert source.num_rows == 5 and source.file.metadata.num_row_groups == 3
    batches = list(source.batches(batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert pa.Table.from_batches(batches).to_pylist() == rows
    assert store.read_table("t/a.parquet", SCHEMA).to_pylist() == rows


def test_empty_table_writer_writes_a_valid_empty_table(store: LocalObjectStore) -> None:
    with store.table_writer("t/empty.parquet", SCHEMA):
        pass
    table = store.read_table("t/empty.parquet", SCHEMA)
    assert table.num_rows == 0 and table.schema == SCHEMA


def test_a_failed_block_writes_nothing_and_bad_rows_are_refused(store: LocalObjectStore) -> None:
    with pytest.raises(RuntimeError), store.table_writer("t/b.parquet", SCHEMA) as sink:
        sink.append({"key": "a", "value": 1})
        raise RuntimeError("stage failed half way")
    assert not store.exists("t/b.parquet")
    with (
        pytest.raises(ValueError, match="not in the schema"),
        store.table_writer("t/c.parquet", SCHEMA, chunk_rows=1) as sink,
    ):
        sink.append({"key": "a", "value": 1, "surprise": 2})
    with (
        pytest.raises(ValueError, match="must not be null"),
        store.table_writer("t/d.parquet", SCHEMA, chunk_rows=1) as sink,
    ):
        sink.append({"key": None, "value": 1})
    assert not store.exists("t/c.parquet") and not store.exists("t/d.parquet")


def test_transcripts_in_small_chunks_equal_one_chunk(tmp_path: Path) -> None:
    tables = {}
    for chunk in (5, 4096):
        root = tmp_path / f"chunk-{chunk}"
        write_phrase_audio(root)
        store = LocalObjectStore(root=str(root), min_free_bytes=0)
        summary = build_transcripts(
            store, LetterCoveringEngine(), PARTITION, TranscriptsConfig(), chunk_phrases=chunk
        )
        assert summary.phrases_in == PHRASES and summary.phrases_ok == PHRASES
        assert len(summary.preview) == 10
        table = store.read_table(stage_table_key(Stage.TRANSCRIPTS, PARTITION), TRANSCRIPTS_SCHEMA)
        tables[chunk] = table.drop_columns(["inference_ms"])
        # Batches are planned within a chunk: five-phrase chunks make 4 + 1 per chunk.
        assert summary.extra["batches"] == (9 if chunk == 5 else PHRASES // 4)
    assert tables[5].equals(tables[4096])


def test_misread_first_preview_is_the_same_over_batches_as_over_the_table() -> None:
    statuses = ["correct", "substituted", "correct", "deleted", "correct", "inserted"] * 7
    rows = [
        {
            "activity_id": f"a{i // 5}",
            "phrase_index": i % 5,
            "letter_index": i,
            "expected": "b",
            "recognized": "d",
            "status": status,
            "confidence": None if i % 11 == 0 else round((i * 37 % 100) / 100, 2),
        }
        for i, status in enumerate(statuses)
    ]
    table = pa.Table.from_pylist(rows)
    whole = misread_first_preview(table)
    assert misread_first_preview(table.to_batches(max_chunksize=3)) == whole
    assert [r["status"] for r in whole].count("correct") == 0
    # Python's stable sort over the same keys is the reference.
    reference = sorted(rows, key=lambda r: (r["status"] == "correct", r["confidence"] or 0.0))[:10]
    assert whole == reference
    assert misread_first_preview([]) == []


def _partition(store: LocalObjectStore, activities: int) -> PartitionManifest:
    phrases, errors = [], []
    for a in range(activities):
        for p in range(3):
            key = {
                "activity_id": f"act-{a:03d}",
                "phrase_index": p,
                "tenant_id": "t",
                "activity_date": date(2026, 11, 2),
                "expected_text": "b d",
            }
            if (a + p) % 4 == 0:
                errors.append(
                    {**key, "stage": "phrase_audio", "reason_code": "audio_empty", "message": ""}
                )
            else:
                phrases.append(
                    {**key, "transcript": "b d", "accuracy": 1.0, "n_expected": 2, "n_correct": 2}
                )
    store.write_table(
        "r/phrase_results.parquet", pa.Table.from_pylist(phrases, PHRASE_RESULTS_SCHEMA)
    )
    store.write_table("r/errors.parquet", pa.Table.from_pylist(errors, ERRORS_SCHEMA))
    model = ModelInfo(name="m", version="1", sha256="s" * 64)
    return PartitionManifest(
        partition=PARTITION,
        run_id="run-1",
        committed_at="2026-11-02T00:00:00Z",
        files={"phrase_results": "r/phrase_results.parquet", "errors": "r/errors.parquet"},
        row_counts={},
        model=model,
        phrases_in=3 * activities,
        phrases_scored=len(phrases),
        phrases_errored=len(errors),
    )


def test_publishing_in_chunks_publishes_what_one_chunk_does(store: LocalObjectStore) -> None:
    from asr_assets.assets.published_scores import activity_record_chunks

    manifest = _partition(store, activities=7)
    whole = [r for chunk in activity_record_chunks(store, manifest, chunk=100) for r in chunk]
    chunks = list(activity_record_chunks(store, manifest, chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [r for c in chunks for r in c] == whole
    assert all(isinstance(r, ActivityResult) for r in whole)
    assert sum(r.n_errors for r in whole) == manifest.phrases_errored

    one = LocalJsonlPublisher(store=store, prefix="one")
    many = LocalJsonlPublisher(store=store, prefix="many")
    assert one.publish(PARTITION, whole).published == 7
    report = PublishReport()
    for chunk in chunks:
        report.add(many.publish(PARTITION, chunk))
    assert report.published == 7 and report.duplicates == 0
    assert store.read_bytes(one._key(PARTITION)) == store.read_bytes(many._key(PARTITION))
    again = PublishReport()
    for chunk in chunks:
        again.add(many.publish(PARTITION, chunk))
    assert again.duplicates == 7 and again.published == 0
