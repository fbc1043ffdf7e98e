"""The native engine judges the letter rows chunk by chunk, and chunking never changes a verdict.

A 100k-phrase day has 400k letter rows; the gate used to hold them (and the expected-letter
frame derived from them) as whole pandas frames, the largest allocation of the run. Now each
chunk is judged and dropped. These tests hold every chunking, down to one row per chunk, to
great-expectations on the whole frames: which expectations failed, their counts and shares,
observed values and sampled rows (as JSON, so 4 and 4.0 differ), including duplicates that lie
in different chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from asr_assets.checks.checks import validate_committed_letter_scores
from asr_assets.checks.native import StreamedSuite, evaluate, evaluate_streamed
from asr_assets.checks.resources import DataQualityResource
from asr_assets.checks.suites import FrameSuite, sample_rows
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.quality import commit_partition, replace_rows, result_partition
from tests.unit.test_quality_engines import CASES, _report
from tests.unit.test_quality_suites import DAY, DEFECTS

GX = DataQualityResource(engine="great_expectations", sample_rows=3)
CHUNKINGS = (1, 2, 3, 7, 65_536)
# Enough phrases that a small chunk size splits phrases and puts duplicates in far-apart chunks.
MANY_PHRASES = tuple((f"act-{i // 3}", i % 3, "b d p q" if i % 2 else "m n") for i in range(24))


def _native(chunk_rows: int) -> DataQualityResource:
    return DataQualityResource(sample_rows=3, letter_chunk_rows=chunk_rows)


def _far_duplicates(tables: dict[str, pa.Table]) -> None:
    """The first letter row again at the end, and a letter row of the middle twice, apart."""

    def edit(rows: list[dict[str, Any]]) -> None:
        rows.append(dict(rows[0]))
        rows.insert(10, dict(rows[40]))

    tables["letter_scores"] = replace_rows(tables["letter_scores"], edit)


def _several_defects(tables: dict[str, pa.Table]) -> None:
    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0].update(confidence=1.5)
        rows[5].update(status="unaligned", start_s=None, end_s=None, unaligned_reason="bogus")
        rows[17].update(model_sha256="b" * 64)
        rows[30].update(end_s=9.0)
        rows[31].update(expected="z")
        rows.append(dict(rows[3]))

    tables["letter_scores"] = replace_rows(tables["letter_scores"], edit)


def _orphan_and_wrong_letter(tables: dict[str, pa.Table]) -> None:
    """A letter of no phrase makes the joined phrase columns float in its chunk only."""

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0].update(activity_id="zzz")
        rows[10].update(expected="q")

    tables["letter_scores"] = replace_rows(tables["letter_scores"], edit)


def _null_phrase_index(tables: dict[str, pa.Table]) -> None:
    """A null key makes the key column float in its chunk only."""

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0].update(phrase_index=None)

    tables["letter_scores"] = replace_rows(tables["letter_scores"], edit)
    tables["phrase_results"] = replace_rows(tables["phrase_results"], edit)


LARGE_DEFECTS = {
    "none": None,
    "far duplicates": _far_duplicates,
    "several": _several_defects,
    "orphan and wrong letter": _orphan_and_wrong_letter,
    "null phrase index": _null_phrase_index,
}


@pytest.mark.parametrize("defect", [None, *sorted(DEFECTS)])
def test_every_chunking_agrees_with_gx(defect: str | None) -> None:
    manifest, tables = result_partition()
    if defect:
        DEFECTS[defect][0](tables)
    reference = _report(GX.validate_letter_scores(DAY, manifest, dict(tables)))
    for chunk_rows in CHUNKINGS:
        streamed = _native(chunk_rows).validate_letter_scores(DAY, manifest, dict(tables))
        assert _report(streamed) == reference, chunk_rows


@pytest.mark.parametrize("defect", sorted(LARGE_DEFECTS))
def test_chunks_that_split_phrases_and_duplicates_agree_with_gx(defect: str) -> None:
    manifest, tables = result_partition(phrases=MANY_PHRASES)
    inject = LARGE_DEFECTS[defect]
    if inject:
        inject(tables)
    reference = _report(GX.validate_letter_scores(DAY, manifest, dict(tables)))
    if defect != "none":
        assert any(not row.get("passed", True) for row in reference)
    for chunk_rows in CHUNKINGS:
        streamed = _native(chunk_rows).validate_letter_scores(DAY, manifest, dict(tables))
        assert _report(streamed) == reference, chunk_rows


def test_duplicates_in_different_chunks_are_sampled() -> None:
    """Rows of a duplicated key are known only after the last chunk: a second pass samples them."""
    manifest, tables = result_partition(phrases=MANY_PHRASES)
    _far_duplicates(tables)
    outcomes = _native(4).validate_letter_scores(DAY, manifest, dict(tables))
    failure = next(
        f
        for o in outcomes
        for f in o.failures
        if f.expectation == "expect_compound_columns_to_be_unique"
    )
    assert failure.unexpected_count == 4
    keys = {(r["activity_id"], r["phrase_index"], r["letter_index"]) for r in failure.sample_rows}
    assert len(failure.sample_rows) == 3 and len(keys) == 2


def test_an_empty_day_agrees_with_gx() -> None:
    manifest, tables = result_partition(phrases=(), errors=())
    reference = _report(GX.validate_letter_scores(DAY, manifest, dict(tables)))
    assert _report(_native(2).validate_letter_scores(DAY, manifest, dict(tables))) == reference


def test_a_letter_table_off_contract_is_judged_whole() -> None:
    """A mistyped column could convert differently chunk by chunk; such a table is not chunked."""
    manifest, tables = result_partition(phrases=MANY_PHRASES)
    DEFECTS["column type drift"][0](tables)
    reference = _report(GX.validate_letter_scores(DAY, manifest, dict(tables)))
    assert _report(_native(1).validate_letter_scores(DAY, manifest, dict(tables))) == reference


def test_the_gate_reads_the_committed_letter_table_in_chunks(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path))
    manifest, tables = result_partition(phrases=MANY_PHRASES)
    _several_defects(tables)
    manifest = manifest.model_copy(
        update={"row_counts": {name: t.num_rows for name, t in tables.items()}}
    )
    commit_partition(store, DAY, dict(tables), manifest)
    in_memory = _native(65_536).validate_letter_scores(DAY, manifest, dict(tables))
    _, from_store = validate_committed_letter_scores(store, _native(5), DAY)
    assert _report(from_store) == _report(in_memory)


# Row counts are judged on whole frames only: no streamed suite has one.
STREAMABLE_CASES = [c[0] for c in CASES if c[2].kind != "ExpectTableRowCountToEqual"]


@pytest.mark.parametrize("name", STREAMABLE_CASES)
def test_streamed_suite_equals_whole_frame_on_edge_cases(name: str) -> None:
    _, frame, expect = next(c for c in CASES if c[0] == name)
    whole_suite = FrameSuite("f", frame, (expect,), tuple(frame.columns))
    (whole,) = evaluate(whole_suite, 3)
    for size in (1, 2, 4):
        suite = StreamedSuite(
            "f", (expect,), lambda f, i, n: sample_rows(f, tuple(frame.columns), i, n), 3
        )

        def chunks(size: int = size) -> Any:
            for start in range(0, len(frame), size):
                yield (frame.iloc[start : start + size].reset_index(drop=True),)

        evaluate_streamed([suite], chunks)
        (streamed,) = suite.results()
        assert streamed.success == whole.success, size
        assert bool(streamed.error) == bool(whole.error), size
        if whole.error:
            continue
        assert streamed.unexpected_count == whole.unexpected_count, size
        assert streamed.unexpected_percent == whole.unexpected_percent, size
        assert streamed.observed_value == whole.observed_value, size
        assert streamed.unexpected_index_list == whole.unexpected_index_list, size
        assert streamed.sample_rows == whole_suite.sample(whole.unexpected_index_list, 3), size


def test_chunk_frames_concatenate_to_the_whole_frames() -> None:
    from asr_assets.checks.suites import Thresholds, letter_frames, phrase_info_frame

    _, tables = result_partition(phrases=MANY_PHRASES)
    _several_defects(tables)
    thresholds = Thresholds(0.2, 0.1, 0.2, 0.02)
    info = phrase_info_frame(tables["phrase_results"].to_pandas())
    letters, expected = letter_frames(tables["letter_scores"], info, thresholds)
    parts = [letter_frames(b, info, thresholds) for b in tables["letter_scores"].to_batches(5)]
    pd.testing.assert_frame_equal(
        pd.concat([p[0] for p in parts], ignore_index=True), letters, check_dtype=False
    )
    pd.testing.assert_frame_equal(
        pd.concat([p[1] for p in parts], ignore_index=True), expected, check_dtype=False
    )
