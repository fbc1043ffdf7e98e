"""Calibration figures of the benchmark: reliability, ROC/PR, Platt fit, review counts, PNGs."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tools.evaluate.__main__ import store_name, summary_table, write_plots
from tools.evaluate.metrics import (
    LetterOutcome,
    fit_platt,
    insertion_labels,
    misread_curves,
    operating_points,
    reliability,
    review_metrics,
)
from tools.evaluate.plot import Series, encode_png, plot


def outcome(true_status: str, predicted: str, confidence: float | None) -> LetterOutcome:
    return LetterOutcome(
        true_status=true_status,
        spoken="b",
        predicted_status=predicted,
        recognized="b",
        confidence=confidence,
    )


def test_reliability_compares_confidence_with_the_share_correct() -> None:
    outcomes = [outcome("correct", "correct", 0.95)] * 9 + [outcome("deleted", "correct", 0.95)]
    outcomes += [outcome("deleted", "deleted", 0.05)] * 10
    rel = reliability(outcomes)
    assert rel["n"] == 20
    top = rel["bins"][-1]
    assert top["n"] == 10 and top["share_correct"] == pytest.approx(0.9)
    assert rel["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)


def test_misread_curves_rank_misreads_below_correct_letters() -> None:
    perfect = [outcome("correct", "correct", 0.9)] * 5 + [outcome("deleted", "deleted", 0.1)] * 5
    assert misread_curves(perfect)["roc_auc"] == pytest.approx(1.0)
    inverted = [outcome("correct", "correct", 0.1)] * 5 + [outcome("deleted", "deleted", 0.9)] * 5
    assert misread_curves(inverted)["roc_auc"] == pytest.approx(0.0)
    unaligned = [outcome("correct", "unaligned", 0.5)]
    assert misread_curves(unaligned)["positives"] == 0  # no confidence to rank by


def test_platt_fit_recovers_a_known_map() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 0.99, 20_000)
    flags = rng.random(20_000) < 0.5
    z = -0.5 + 0.8 * np.log(scores / (1 - scores)) + 1.5 * flags
    labels = rng.random(20_000) < 1 / (1 + np.exp(-z))
    bias, weight, flag_weight = fit_platt(scores, flags, labels)
    assert (bias, weight, flag_weight) == pytest.approx((-0.5, 0.8, 1.5), abs=0.1)


def test_review_metrics_count_uncertain_and_judge_the_rest() -> None:
    outcomes = [
        outcome("correct", "correct", 0.9),
        outcome("deleted", "deleted", 0.1),
        outcome("deleted", "uncertain", 0.5),
        outcome("correct", "uncertain", 0.5),
    ]
    review = review_metrics(outcomes)
    assert review["letters_uncertain"] == 2 and review["uncertain_share"] == 0.5
    assert review["uncertain_truly_misread"] == 1
    assert review["decided_balanced_accuracy"] == 1.0


def test_insertion_labels_take_the_most_confident_as_real() -> None:
    truth = [{"activity_id": "a", "phrase_index": 0, "true_status": "inserted"}]
    rows = [
        {"activity_id": "a", "phrase_index": 0, "status": "inserted", "confidence": 0.3},
        {"activity_id": "a", "phrase_index": 0, "status": "inserted", "confidence": 0.8},
        {"activity_id": "a", "phrase_index": 1, "status": "inserted", "confidence": 0.9},
    ]
    assert sorted(insertion_labels(truth, rows)) == [(0.3, False), (0.8, True), (0.9, False)]


def _png_size_and_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    return width, height, zlib.decompress(data[idat + 4 : idat + 4 + length])


def test_png_encoding_round_trips() -> None:
    image = np.zeros((3, 2, 3), dtype=np.uint8)
    image[1, 1] = (255, 0, 10)
    width, height, raw = _png_size_and_pixels(encode_png(image))
    assert (width, height) == (2, 3)
    assert raw[7 + 1 + 3 : 7 + 1 + 6] == bytes((255, 0, 10))  # row 1 (7 bytes a row), pixel 1


def test_plots_draw_each_series(tmp_path: Path) -> None:
    plot(tmp_path / "p.png", [Series([(0, 0), (1, 1)], [(0.5, 0.5)])], diagonal=True)
    width, height, raw = _png_size_and_pixels((tmp_path / "p.png").read_bytes())
    assert width == height == 440
    assert bytes((31, 119, 180)) in raw  # the first series' colour


def test_write_plots_and_table_for_several_stores(tmp_path: Path) -> None:
    outcomes = [outcome("correct", "correct", 0.9)] * 3 + [outcome("deleted", "deleted", 0.1)]
    report = {
        "misread_curves": misread_curves(outcomes),
        "reliability": reliability(outcomes),
        "alignments_config": {},
        "balanced_accuracy": 1.0,
        "uncertain_share": 0.0,
    }
    reports = {
        store_name(Path(".tmp/eval-store")): report,
        store_name(Path("x/eval-festival")): report,
    }
    assert list(reports) == ["espeak-ng held-out", "festival"]
    legend = write_plots(reports, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "misread-roc.png",
        "misread-pr.png",
        "reliability.png",
    }
    assert "orange: festival" in legend[0]
    table = summary_table(reports)
    assert "| festival | 100.0% |" in table


def test_operating_points_trade_recall_for_false_alarms() -> None:
    outcomes = [outcome("correct", "correct", p) for p in (0.3, 0.9, 0.99, 0.99)]
    outcomes += [outcome("deleted", "deleted", p) for p in (0.1, 0.6)]
    low, high = operating_points(outcomes, (0.2, 0.95))
    assert (low["misread_recall"], low["false_alarm_rate"]) == (0.5, 0.0)
    assert (high["misread_recall"], high["false_alarm_rate"]) == (1.0, 0.5)
    assert high["flagged_share"] == pytest.approx(4 / 6)
