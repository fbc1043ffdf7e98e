"""`make eval`'s report on the shipped sample day, through the real pipeline: the per-phrase
counts `--compare` pairs on add up to the report's own figures, and the intervals hold them."""

import shutil
from pathlib import Path

import pytest

from asr_assets.definitions import DEFAULT_MODEL_DIR
from tools.evaluate.__main__ import compare_reports, evaluate, format_report

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample-store"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("eval") / "eval-sample"
    shutil.copytree(SAMPLE, root)
    return evaluate(root, DEFAULT_MODEL_DIR)


def test_phrase_counts_add_up_to_the_report(report: dict[str, object]) -> None:
    counts = report["phrase_counts"]
    columns = counts["columns"]  # type: ignore[index]
    totals = {c: sum(row[i] for row in counts["counts"]) for i, c in enumerate(columns)}  # type: ignore[index]
    for name in ("true_positive", "false_negative", "false_positive", "true_negative"):
        assert totals[name] == report[name]
    assert sum(totals[c] for c in columns[:4]) == report["letters_judged"]
    assert totals["recognized"] / report["letters_judged"] == pytest.approx(  # type: ignore[operator]
        report["letter_recognition_accuracy"]
    )
    # Every phrase with an expected letter is named once, rejected ones included.
    assert len(set(counts["phrases"])) == len(counts["phrases"])  # type: ignore[index]


def test_intervals_hold_the_figures_and_are_printed(report: dict[str, object]) -> None:
    intervals = report["intervals_95"]
    for name in ("balanced_accuracy", "misread_recall", "letter_recognition_accuracy"):
        low, high = intervals[name]  # type: ignore[index]
        assert low <= report[name] <= high  # type: ignore[operator]
    assert "95% intervals (phrases resampled)" in format_report(report)


def test_a_run_compared_with_itself_is_within_noise(report: dict[str, object]) -> None:
    diffs = compare_reports(report, report)
    assert set(diffs) == {"sample"}
    for figure in diffs["sample"].values():
        assert figure["difference"] == 0
        assert figure["verdict"] == "within noise"
