"""Uncertainty of the benchmark's figures: phrase-bootstrap intervals and paired comparisons."""

import json
from pathlib import Path

import numpy as np
import pytest

from tools.evaluate.__main__ import compare_reports, comparison_table, main
from tools.evaluate.metrics import (
    COUNT_COLUMNS,
    LetterOutcome,
    bootstrap_intervals,
    decision_metrics,
    figures_from_counts,
    paired_difference,
    phrase_counts,
    recognition_accuracy,
)


def letter(true_status: str, predicted: str | None, spoken: str = "b", heard: str = "b"):
    return LetterOutcome(
        true_status=true_status,
        spoken=None if true_status == "deleted" else spoken,
        predicted_status=predicted,
        recognized=heard,
    )


def random_day(rng: np.random.Generator, phrases: int, flip: float = 0.05):
    """Letters of `phrases` phrases; about one in eight truly misread, `flip` of them misjudged."""
    outcomes, keys = [], []
    for p in range(phrases):
        for _ in range(rng.integers(2, 9)):
            misread = rng.random() < 0.125
            wrong = rng.random() < flip
            called = misread != wrong
            outcomes.append(
                letter(
                    "substituted" if misread else "correct",
                    "substituted" if called else "correct",
                    heard="b" if not wrong else "d",
                )
            )
            keys.append(f"a:{p}")
    return outcomes, keys


def test_phrase_counts_are_the_decision_counts_of_each_phrase() -> None:
    outcomes = [
        letter("correct", "correct"),
        letter("substituted", "substituted", spoken="d", heard="d"),
        letter("deleted", "correct", heard="b"),
        letter("correct", "uncertain", heard="b"),
        letter("correct", None),  # rejected phrase: not judged, not counted
    ]
    keys, counts = phrase_counts(outcomes, ["p1", "p1", "p2", "p2", "p3"])
    assert keys == ["p1", "p2", "p3"]
    assert list(COUNT_COLUMNS) == [
        "true_positive",
        "false_negative",
        "false_positive",
        "true_negative",
        "recognized",
    ]
    assert counts.tolist() == [[1, 0, 0, 1, 2], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]]


def test_figures_from_summed_counts_equal_the_report_figures() -> None:
    outcomes, keys = random_day(np.random.default_rng(3), 120, flip=0.1)
    _, counts = phrase_counts(outcomes, keys)
    figures = figures_from_counts(counts.sum(axis=0))
    decision = decision_metrics(outcomes)
    assert figures["balanced_accuracy"] == pytest.approx(decision["balanced_accuracy"])
    assert figures["misread_recall"] == pytest.approx(decision["misread_recall"])
    assert figures["letter_recognition_accuracy"] == pytest.approx(recognition_accuracy(outcomes))


def test_intervals_hold_the_figure_and_narrow_with_more_phrases() -> None:
    rng = np.random.default_rng(0)
    small = phrase_counts(*random_day(rng, 100))[1]
    large = phrase_counts(*random_day(rng, 1600))[1]
    widths = []
    for counts in (small, large):
        point = figures_from_counts(counts.sum(axis=0))["balanced_accuracy"]
        low, high = bootstrap_intervals(counts)["balanced_accuracy"]
        assert low < point < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # 16x the phrases: about a quarter of the width


def test_intervals_resample_phrases_not_letters() -> None:
    """Letters of one phrase that fail together are one draw, not eight independent ones."""
    rng = np.random.default_rng(1)
    outcomes, keys = [], []
    for p in range(200):
        misjudged = rng.random() < 0.2  # the whole phrase is misjudged, or none of it
        for _ in range(8):
            outcomes.append(letter("correct", "substituted" if misjudged else "correct"))
            keys.append(f"a:{p}")
        outcomes.append(letter("substituted", "substituted"))
        keys.append(f"a:{p}")
    _, by_phrase = phrase_counts(outcomes, keys)
    _, by_letter = phrase_counts(outcomes, [str(i) for i in range(len(outcomes))])
    low_p, high_p = bootstrap_intervals(by_phrase)["balanced_accuracy"]
    low_l, high_l = bootstrap_intervals(by_letter)["balanced_accuracy"]
    assert high_p - low_p > 2 * (high_l - low_l)


def test_no_phrases_no_intervals() -> None:
    assert bootstrap_intervals(np.zeros((0, 5), dtype=np.int64)) == {
        "balanced_accuracy": None,
        "misread_recall": None,
        "letter_recognition_accuracy": None,
    }


def test_paired_difference_sees_a_real_change_and_not_noise() -> None:
    outcomes, keys = random_day(np.random.default_rng(2), 400, flip=0.02)
    _, base = phrase_counts(outcomes, keys)

    same = paired_difference(base, base.copy())
    assert same["balanced_accuracy"]["difference"] == 0
    assert same["balanced_accuracy"]["low"] == same["balanced_accuracy"]["high"] == 0
    assert same["balanced_accuracy"]["verdict"] == "within noise"

    # One more misread missed in 400 phrases: a real difference, but not one the draw can show.
    one = base.copy()
    row = int(np.flatnonzero(one[:, 0])[0])
    one[row, 0] -= 1
    one[row, 1] += 1
    slight = paired_difference(base, one)["misread_recall"]
    assert slight["difference"] < 0
    assert slight["verdict"] == "within noise"

    # Half the true misreads missed: worse beyond doubt; the reverse direction is better.
    worse = base.copy()
    moved = worse[:, 0] // 2 + (worse[:, 0] % 2) * (np.arange(len(worse)) % 2)
    worse[:, 0] -= moved
    worse[:, 1] += moved
    assert paired_difference(base, worse)["misread_recall"]["verdict"] == "worse"
    assert paired_difference(worse, base)["balanced_accuracy"]["verdict"] == "better"

    with pytest.raises(ValueError, match="shape"):
        paired_difference(base, base[:-1])
    with pytest.raises(ValueError, match="no phrases"):
        paired_difference(base[:0], base[:0])


def report_for(counts: np.ndarray, phrases: list[str]) -> dict:
    return {
        "store": "/x/.tmp/eval-festival",
        "phrase_counts": {
            "columns": list(COUNT_COLUMNS),
            "phrases": phrases,
            "counts": counts.tolist(),
        },
    }


def test_compare_reports_pairs_the_same_stores(tmp_path: Path) -> None:
    outcomes, keys = random_day(np.random.default_rng(4), 150)
    phrases, counts = phrase_counts(outcomes, keys)
    worse = counts.copy()
    worse[:, 1] += worse[:, 0]
    worse[:, 0] = 0
    base = {"stores": {"festival": report_for(counts, phrases)}}
    candidate = {"stores": {"festival": report_for(worse, phrases)}}
    diffs = compare_reports(base, candidate)
    assert diffs["festival"]["misread_recall"]["candidate"] == 0
    assert diffs["festival"]["misread_recall"]["verdict"] == "worse"
    table = comparison_table(diffs)
    assert "| festival | misread recall |" in table and "worse" in table

    # A single-store report (as `--store` once writes it) is named by its store.
    assert set(compare_reports(report_for(counts, phrases), candidate)) == {"festival"}

    other = {"stores": {"festival": report_for(counts, [*phrases[:-1], "b:0"])}}
    with pytest.raises(ValueError, match="different phrases"):
        compare_reports(base, other)
    old = {"stores": {"festival": {"store": "/x/.tmp/eval-festival"}}}
    with pytest.raises(ValueError, match="phrase counts"):
        compare_reports(old, candidate)

    # The CLI reads two report files, writes the differences and runs no pipeline.
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    a.write_text(json.dumps(base))
    b.write_text(json.dumps(candidate))
    assert main(["--compare", str(a), str(b), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["festival"]["misread_recall"]["verdict"] == "worse"
    with pytest.raises(SystemExit):
        main(["--compare", str(a), str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit):
        main([])
