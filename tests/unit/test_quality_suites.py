"""The expectation suites on in-memory tables: each defect fails exactly the check it belongs to."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pyarrow as pa
import pytest

from asr_assets.checks.resources import DataQualityResource
from asr_assets.checks.suites import ACTIVITIES_CHECKS, LETTER_SCORES_CHECKS
from asr_assets.core.models import PartitionManifest
from tests.support.quality import activities_stage, replace_rows, result_partition

DAY = "2026-11-27"
Tables = dict[str, pa.Table]


@pytest.fixture(scope="module", params=["native", "great_expectations"])
def quality(request: pytest.FixtureRequest) -> DataQualityResource:
    """Every suite test runs on both engines: the native one and GX, its reference."""
    return DataQualityResource(engine=request.param)


def _failed(outcomes) -> set[str]:
    return {o.check for o in outcomes if not o.passed}


def test_clean_partition_passes_every_letter_check(quality: DataQualityResource) -> None:
    manifest, tables = result_partition()
    outcomes = quality.validate_letter_scores(DAY, manifest, tables)
    assert [o.check for o in outcomes] == list(LETTER_SCORES_CHECKS)
    assert _failed(outcomes) == set()
    assert all(o.evaluated > 0 for o in outcomes)
    shares = {o.check: dict(o.observations) for o in outcomes if o.observations}
    assert shares["letter_scores_error_share"]["error_share"] == round(1 / 6, 4)


def _letters(edit: Callable[[list[dict]], None]) -> Callable[[Tables], None]:
    def apply(tables: Tables) -> None:
        tables["letter_scores"] = replace_rows(tables["letter_scores"], edit)

    return apply


def _set(index: int, **values: object) -> Callable[[list[dict]], None]:
    return lambda rows: rows[index].update(values)


def _duplicate_first(rows: list[dict]) -> None:
    rows.append(dict(rows[0]))


def _drop_second(rows: list[dict]) -> None:
    del rows[1]


def _orphan(rows: list[dict]) -> None:
    rows.append({**rows[0], "activity_id": "act-unknown"})


def _mixed_hashes(rows: list[dict]) -> None:
    for row in rows[::2]:
        row["model_sha256"] = "b" * 64


def _scored_and_errored(tables: Tables) -> None:
    # The error row now names a phrase that was also scored (counts unchanged).
    tables["errors"] = replace_rows(
        tables["errors"], lambda rows: rows[0].update(activity_id="act-1", phrase_index=0)
    )


def _confidence_as_double(tables: Tables) -> None:
    table = tables["letter_scores"]
    index = table.schema.get_field_index("confidence")
    tables["letter_scores"] = table.set_column(
        index, "confidence", table.column("confidence").cast(pa.float64())
    )


DEFECTS = {
    "confidence above one": (_letters(_set(0, confidence=1.7)), "letter_scores_values"),
    "missing confidence": (_letters(_set(1, confidence=None)), "letter_scores_values"),
    "unknown status": (_letters(_set(0, status="maybe")), "letter_scores_values"),
    "end before start": (_letters(_set(1, start_s=0.9, end_s=0.5)), "letter_scores_values"),
    "end after the phrase": (_letters(_set(2, end_s=1.9)), "letter_scores_values"),
    "duplicated letter row": (_letters(_duplicate_first), "letter_scores_completeness"),
    "missing letter row": (_letters(_drop_second), "letter_scores_completeness"),
    "letter of no phrase": (_letters(_orphan), "letter_scores_completeness"),
    "wrong expected letter": (_letters(_set(0, expected="q")), "letter_scores_completeness"),
    "phrase scored and errored": (_scored_and_errored, "letter_scores_completeness"),
    "mixed model hashes": (_letters(_mixed_hashes), "letter_scores_model"),
    "missing model hash": (_letters(_set(0, model_sha256=None)), "letter_scores_model"),
    "column type drift": (_confidence_as_double, "letter_scores_schema"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_letter_defect_fails_its_check(quality: DataQualityResource, defect: str) -> None:
    inject, check = DEFECTS[defect]
    manifest, tables = result_partition()
    inject(tables)
    outcomes = quality.validate_letter_scores(DAY, manifest, tables)
    assert _failed(outcomes) == {check}
    failure = next(o for o in outcomes if o.check == check).failures[0]
    assert failure.describe()


def test_error_share_threshold_is_inclusive() -> None:
    strict = DataQualityResource(max_error_share=0.2)
    # 1 errored of 5 phrases = exactly 0.2: allowed; 2 of 5: not.
    phrases = (("a", 0, "b"), ("b", 0, "c"), ("c", 0, "d"), ("d", 0, "e"))
    manifest, tables = result_partition(phrases=phrases, errors=(("e", 0, "audio_empty"),))
    assert _failed(strict.validate_letter_scores(DAY, manifest, tables)) == set()
    manifest, tables = result_partition(
        phrases=phrases[:3], errors=(("e", 0, "audio_empty"), ("f", 0, "audio_silent"))
    )
    outcomes = strict.validate_letter_scores(DAY, manifest, tables)
    assert _failed(outcomes) == {"letter_scores_error_share"}
    failure = next(o for o in outcomes if not o.passed).failures[0]
    assert failure.unexpected_count == 2 and failure.unexpected_percent == pytest.approx(40.0)
    assert "at most 20.0% allowed" in failure.describe()
    # A looser bound, as an operator sets for a day known to be noisy, tolerates it.
    loose = DataQualityResource(max_error_share=0.5)
    assert _failed(loose.validate_letter_scores(DAY, manifest, tables)) == set()
    manifest, tables = result_partition(
        phrases=phrases[:1], errors=(("e", 0, "audio_empty"), ("f", 0, "audio_missing"))
    )
    assert _failed(loose.validate_letter_scores(DAY, manifest, tables)) == {
        "letter_scores_error_share"
    }
    assert DataQualityResource().max_error_share == 0.2


def test_unaligned_share(quality: DataQualityResource) -> None:
    manifest, tables = result_partition(status="unaligned")
    tables["letter_scores"] = replace_rows(
        tables["letter_scores"],
        lambda rows: [
            r.update(start_s=None, end_s=None, unaligned_reason="audio_too_short_for_sequence")
            for r in rows
            if r["status"] == "unaligned"
        ],
    )
    assert _failed(quality.validate_letter_scores(DAY, manifest, tables)) == {
        "letter_scores_unaligned_share"
    }


def test_manifest_disagreeing_with_rows(quality: DataQualityResource) -> None:
    manifest, tables = result_partition()
    other = manifest.model_copy(update={"phrases_in": manifest.phrases_in + 1})
    assert _failed(quality.validate_letter_scores(DAY, other, tables)) == {
        "letter_scores_completeness"
    }
    model = manifest.model.model_copy(update={"sha256": "c" * 64})
    other = manifest.model_copy(update={"model": model})
    assert _failed(quality.validate_letter_scores(DAY, other, tables)) == {"letter_scores_model"}


def test_partition_with_nothing_scored_passes_shape_checks(quality: DataQualityResource) -> None:
    manifest, tables = result_partition(phrases=(), errors=())
    manifest = PartitionManifest.model_validate(
        {**manifest.model_dump(), "phrases_in": 0, "phrases_scored": 0, "phrases_errored": 0}
    )
    assert _failed(quality.validate_letter_scores(DAY, manifest, tables)) == set()


def test_failure_reports_sample_rows_without_raw_keys(quality: DataQualityResource) -> None:
    manifest, tables = result_partition()
    tables["letter_scores"] = replace_rows(
        tables["letter_scores"], lambda rows: [r.update(confidence=3.0) for r in rows]
    )
    small = DataQualityResource(sample_rows=2)
    outcome = next(
        o
        for o in small.validate_letter_scores(DAY, manifest, tables)
        if o.check == "letter_scores_values"
    )
    failure = next(f for f in outcome.failures if "confidence" in f.columns)
    assert failure.unexpected_count == tables["letter_scores"].num_rows
    assert len(failure.sample_rows) == 2
    assert failure.sample_rows[0]["confidence"] == 3.0
    assert {"activity_id", "phrase_index", "letter_index"} <= set(failure.sample_rows[0])


# --- activities ------------------------------------------------------------------------------


def _stage_rows(edit: Callable[[list[dict]], None]) -> pa.Table:
    return replace_rows(activities_stage(), edit)


def _rejected(count: int) -> Callable[[list[dict]], None]:
    def edit(rows: list[dict]) -> None:
        for row in rows[:count]:
            row.update(error_stage="activities", error_reason="unsafe_audio_key", error_message="x")

    return edit


ACTIVITY_DEFECTS = {
    "unsafe audio key": (_set(3, audio_key="../../etc/passwd"), "activities_values"),
    "invalid expected text": (_set(0, expected_text="B D"), "activities_values"),
    "another day's row": (_set(1, activity_date=date(2026, 11, 26)), "activities_values"),
    "segment reversed": (_set(2, audio_start_s=2.0, audio_end_s=1.0), "activities_values"),
    "duplicated phrase": (lambda rows: rows.append(dict(rows[0])), "activities_keys"),
    "missing tenant": (_set(5, tenant_id=None), "activities_keys"),
    "most rows rejected": (_rejected(6), "activities_rejected_share"),
    "unknown reason code": (
        _set(0, error_stage="activities", error_reason="gremlins", error_message="x"),
        "activities_rejected_share",
    ),
}


def test_clean_activities_pass(quality: DataQualityResource) -> None:
    outcomes = quality.validate_activities(DAY, activities_stage())
    assert [o.check for o in outcomes] == list(ACTIVITIES_CHECKS)
    assert _failed(outcomes) == set()


@pytest.mark.parametrize("defect", sorted(ACTIVITY_DEFECTS))
def test_activity_defect_fails_its_check(quality: DataQualityResource, defect: str) -> None:
    edit, check = ACTIVITY_DEFECTS[defect]
    assert _failed(quality.validate_activities(DAY, _stage_rows(edit))) == {check}


def test_rejected_rows_are_not_held_to_the_value_rules(quality: DataQualityResource) -> None:
    """The stage already turned these rows into error rows; the gate judges what goes on."""

    def edit(rows: list[dict]) -> None:
        rows[0].update(audio_key="../x", error_stage="activities", error_reason="unsafe_audio_key")
        rows[1].update(
            expected_text="B D", error_stage="activities", error_reason="invalid_expected_text"
        )

    assert _failed(quality.validate_activities(DAY, _stage_rows(edit))) == set()


def test_unsafe_key_sample_shows_the_rule_not_the_key(quality: DataQualityResource) -> None:
    table = _stage_rows(_set(3, audio_key="audio/student-secret-7/../../x.wav"))
    outcome = next(
        o for o in quality.validate_activities(DAY, table) if o.check == "activities_values"
    )
    rows = [row for f in outcome.failures for row in f.sample_rows]
    assert rows and rows[0]["audio_key_problem"]
    assert "student-secret" not in repr(outcome)
    assert all("audio_key" not in row for row in rows)


def test_missing_column_fails_the_schema_check(quality: DataQualityResource) -> None:
    table = activities_stage().drop_columns(["created_at"])
    assert "activities_schema" in _failed(quality.validate_activities(DAY, table))


def test_one_long_unaligned_phrase_cannot_tip_the_unaligned_share() -> None:
    """Weighted by phrases: one 60-letter phrase, all unaligned, among ten phrases is 10%."""
    long_text = " ".join("b" * 60)
    phrases = [(f"a{i}", 0, "b d") for i in range(9)] + [("long", 0, long_text)]
    manifest, tables = result_partition(phrases=phrases, errors=())

    def unalign(rows: list[dict[str, object]]) -> None:
        for r in rows:
            if r["activity_id"] == "long":
                r.update(
                    status="unaligned",
                    start_s=None,
                    end_s=None,
                    unaligned_reason="audio_too_short_for_sequence",
                )

    tables["letter_scores"] = replace_rows(tables["letter_scores"], unalign)
    # 60 of 78 letters are unaligned, but only 1 of 10 phrases.
    assert _failed(DataQualityResource().validate_letter_scores(DAY, manifest, tables)) == set()
    strict = DataQualityResource(max_unaligned_share=0.05)
    assert _failed(strict.validate_letter_scores(DAY, manifest, tables)) == {
        "letter_scores_unaligned_share"
    }


def test_a_duplicate_set_keeps_the_completeness_gate() -> None:
    """Every row of a duplicated key is a duplicate_phrase error; the day stays complete."""
    phrases = [(f"a{i}", 0, "b d") for i in range(10)]
    errors = (("dup", 0, "duplicate_phrase"), ("dup", 0, "duplicate_phrase"))
    manifest, tables = result_partition(phrases=phrases, errors=errors)
    assert _failed(DataQualityResource().validate_letter_scores(DAY, manifest, tables)) == set()
