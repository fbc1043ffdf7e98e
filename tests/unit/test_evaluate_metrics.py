"""The accuracy metrics on hand-made cases with known answers."""

import pytest

from tools.evaluate.metrics import (
    LetterOutcome,
    confusion_table,
    decision_metrics,
    insertion_metrics,
    join_outcomes,
    recognition_accuracy,
    span_errors,
    top_confusions,
)


def truth_row(phrase: int, index: int, status: str, spoken: str | None, span=(None, None)) -> dict:
    return {
        "activity_id": "a",
        "phrase_index": phrase,
        "letter_index": index,
        "expected_letter": "x",
        "true_status": status,
        "spoken_letter": spoken,
        "true_start_s": span[0],
        "true_end_s": span[1],
    }


def pred_row(
    phrase: int, index: int, status: str, recognized: str | None, span=(None, None)
) -> dict:
    return {
        "activity_id": "a",
        "phrase_index": phrase,
        "letter_index": index,
        "status": status,
        "recognized": recognized,
        "start_s": span[0],
        "end_s": span[1],
    }


def test_join_uses_rows_and_treats_silence_as_nothing_read() -> None:
    truth = [
        truth_row(0, 0, "correct", "b"),
        truth_row(0, 1, "deleted", None),
        truth_row(1, 0, "deleted", None),
        truth_row(2, 0, "correct", "m"),
        truth_row(0, 2, "inserted", "q"),
    ]
    letters = [pred_row(0, 0, "correct", "b"), pred_row(0, 1, "correct", "d")]
    errors = [
        {"activity_id": "a", "phrase_index": 1, "reason_code": "audio_silent"},
        {"activity_id": "a", "phrase_index": 2, "reason_code": "audio_undecodable"},
    ]
    outcomes = join_outcomes(truth, letters, errors)
    assert [o.predicted_status for o in outcomes] == ["correct", "correct", "deleted", None]
    assert recognition_accuracy(outcomes) == pytest.approx(2 / 3)


def test_decision_metrics_known_counts() -> None:
    def o(true: str, pred: str) -> LetterOutcome:
        return LetterOutcome(true, None, pred, None)

    outcomes = (
        [o("correct", "correct")] * 8
        + [o("correct", "substituted")] * 2
        + [o("substituted", "substituted")] * 3
        + [o("deleted", "correct")] * 1
        + [o("deleted", "unaligned")] * 1
    )
    m = decision_metrics(outcomes)
    assert (m["true_positive"], m["false_negative"], m["false_positive"], m["true_negative"]) == (
        4,
        1,
        2,
        8,
    )
    assert m["misread_recall"] == pytest.approx(0.8)
    assert m["misread_precision"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.8 + 0.8) / 2)


def test_balanced_accuracy_is_undefined_without_both_classes() -> None:
    m = decision_metrics([LetterOutcome("correct", "a", "correct", "a")])
    assert m["balanced_accuracy"] is None and m["misread_recall"] is None


def test_span_errors() -> None:
    outcomes = [
        LetterOutcome("correct", "a", "correct", "a", 1.0, 1.3, 1.02, 1.25),  # 20 / 50 ms
        LetterOutcome("correct", "b", "correct", "b", 2.0, 2.3, 2.10, 2.30),  # 100 / 0 ms
        LetterOutcome("deleted", None, "deleted", None, None, None, 3.0, 3.1),  # not timed
    ]
    m = span_errors(outcomes)
    assert m["letters_timed"] == 2
    assert m["start_median_ms"] == pytest.approx(60.0)
    assert m["share_within_60ms"] == pytest.approx(0.5)
    assert m["boundary_median_ms"] == pytest.approx(35.0)


def test_confusions() -> None:
    outcomes = [
        LetterOutcome("correct", "b", "correct", "b"),
        LetterOutcome("substituted", "d", "correct", "b"),
        LetterOutcome("substituted", "d", "correct", "b"),
        LetterOutcome("deleted", None, "correct", "p"),
    ]
    table = confusion_table(outcomes)
    assert table == {"-": {"p": 1}, "b": {"b": 1}, "d": {"b": 2}}
    assert top_confusions(table) == [("d", "b", 2), ("-", "p", 1)]


def test_insertions_matched_by_count_per_phrase() -> None:
    truth = [truth_row(0, 1, "inserted", "q"), truth_row(1, 0, "inserted", "z")]
    letters = [pred_row(0, 1, "inserted", "q"), pred_row(2, 0, "inserted", "k")]
    m = insertion_metrics(truth, letters)
    assert (m["insertion_precision"], m["insertion_recall"]) == (0.5, 0.5)
