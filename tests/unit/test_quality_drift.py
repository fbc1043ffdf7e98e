"""The drift report: KS statistic and mean shift against trailing committed partitions, and its plot."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from asr_assets.assets.letter_scores import QuarantineEntry, quarantine_partition
from asr_assets.checks.checks import partition_drift, score_values, trailing_partitions
from asr_assets.checks.drift import (
    DriftSettings,
    compare,
    ks_statistic,
    markdown_histogram,
    render_svg,
)
from asr_assets.checks.resources import DataQualityResource
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.quality import commit_partition, scores_partition

SETTINGS = DriftSettings(max_ks=0.25, max_mean_shift=0.1, min_samples=20, bins=10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_statistic_matches_scipy(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a, b = rng.beta(5, 2, size=200), rng.beta(4, 3, size=150)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_ks_statistic_extremes() -> None:
    values = np.linspace(0, 1, 50)
    assert ks_statistic(values, values) == 0.0
    assert ks_statistic(values * 0.4, values * 0.4 + 0.5) == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic(values, np.empty(0))


def test_verdicts() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.beta(8, 2, size=500)
    assert compare("x", rng.beta(8, 2, size=300), baseline, SETTINGS).verdict == "stable"
    shifted = compare("x", rng.beta(2, 8, size=300), baseline, SETTINGS)
    assert shifted.verdict == "shifted" and shifted.mean_shift is not None
    assert shifted.mean_shift < -0.4
    assert compare("x", baseline[:5], baseline, SETTINGS).verdict == "insufficient_data"
    assert compare("x", baseline, np.empty(0), SETTINGS).verdict == "insufficient_data"
    assert sum(shifted.current_histogram) == pytest.approx(1.0)


def test_plots_render() -> None:
    rng = np.random.default_rng(3)
    metric = compare("letter_confidence", rng.random(100), rng.random(100), SETTINGS)
    text = markdown_histogram(metric)
    assert text.count("\n| 0.") == SETTINGS.bins and "letter_confidence" in text
    from asr_assets.checks.drift import DriftReport

    svg = render_svg(DriftReport("2026-11-27", ("2026-11-26",), (metric, metric)))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) == 4 * SETTINGS.bins


def _commit_day(store: LocalObjectStore, day: date, accuracy: float, confidence: float) -> str:
    key = day.isoformat()
    rng = np.random.default_rng(day.toordinal())
    accuracies = np.clip(rng.normal(accuracy, 0.05, 40), 0, 1)
    confidences = np.clip(rng.normal(confidence, 0.05, 60), 0, 1)
    manifest, tables = scores_partition(key, accuracies.tolist(), confidences.tolist())
    commit_partition(store, key, tables, manifest, run_id=f"run-{key}")
    return key


def test_drift_against_trailing_partitions(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    today = date(2026, 11, 27)
    # Ten earlier days, one missing and one quarantined: the baseline takes the seven newest
    # trustworthy ones.
    for offset in range(1, 11):
        if offset == 2:
            continue
        _commit_day(store, today - timedelta(days=offset), 0.8, 0.85)
    quarantined = (today - timedelta(days=3)).isoformat()
    quarantine_partition(
        store,
        quarantined,
        QuarantineEntry(
            gate="letter_scores",
            check_run_id="r",
            result_run_id="r",
            quarantined_at="2026-11-25T00:00:00Z",  # type: ignore[arg-type]
            failed_checks=["letter_scores_values"],
            summary="test",
            failed_expectations=[],
        ),
    )
    expected = [(today - timedelta(days=d)).isoformat() for d in (1, 4, 5, 6, 7, 8, 9)]
    assert trailing_partitions(store, today.isoformat(), 7, 31) == expected
    assert trailing_partitions(store, today.isoformat(), 3, 2) == expected[:1]

    _commit_day(store, today, 0.8, 0.85)
    report = partition_drift(store, today.isoformat(), DataQualityResource())
    assert report.baseline_partitions == tuple(expected)
    assert not report.shifted
    assert {m.name for m in report.metrics} == {"phrase_accuracy", "letter_confidence"}

    _commit_day(store, today, 0.3, 0.5)
    report = partition_drift(store, today.isoformat(), DataQualityResource())
    assert report.shifted
    assert all(m.verdict == "shifted" for m in report.metrics)
    accuracy = next(m for m in report.metrics if m.name == "phrase_accuracy")
    assert accuracy.mean_shift == pytest.approx(-0.5, abs=0.05)
    assert accuracy.n_baseline == 7 * 40


def test_no_history_is_no_verdict(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    key = _commit_day(store, date(2026, 11, 27), 0.8, 0.85)
    report = partition_drift(store, key, DataQualityResource())
    assert report.baseline_partitions == ()
    assert {m.verdict for m in report.metrics} == {"insufficient_data"}
    assert score_values(store, "2026-11-20") is None
