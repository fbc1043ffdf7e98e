"""Partition start day, drift without history, misread-first preview, per-partition metadata."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from asr_assets.assets.common import StageSummary, partition_metadata
from asr_assets.assets.letter_scores import misread_first_preview
from asr_assets.assets.partitions import (
    DEFAULT_FIRST_DAY,
    FirstDayConfigError,
    daily_partitions,
    first_day,
)
from asr_assets.checks.drift import (
    DriftReport,
    DriftSettings,
    drift_report,
    insufficient_data,
    numeric_metadata,
)
from asr_assets.core.errors import Stage

SETTINGS = DriftSettings(max_ks=0.25, max_mean_shift=0.1, min_samples=5, bins=10)


def test_partitions_start_at_the_configured_first_day() -> None:
    assert first_day({}) == DEFAULT_FIRST_DAY
    assert first_day({"ASR_FIRST_DAY": "2026-11-20"}) == "2026-11-20"
    with pytest.raises(FirstDayConfigError, match="ASR_FIRST_DAY"):
        first_day({"ASR_FIRST_DAY": "2026/11/20"})
    # No years of "missing" days before the project existed.
    assert daily_partitions.get_first_partition_key() == DEFAULT_FIRST_DAY


def _report(baseline_days: int) -> DriftReport:
    rng = np.random.default_rng(0)
    values = {"phrase_accuracy": rng.uniform(0.8, 1.0, 50)}
    baseline = {"phrase_accuracy": rng.uniform(0.8, 1.0, 50 * baseline_days)}
    keys = [f"2026-11-{20 - i:02d}" for i in range(baseline_days)]
    return drift_report("2026-11-27", values, baseline, keys, SETTINGS)


def test_drift_without_history_says_insufficient_data_not_passed() -> None:
    assert insufficient_data(_report(0), 7) == "insufficient data (0 of 7 baseline days)"
    assert insufficient_data(_report(3), 7) == "insufficient data (3 of 7 baseline days)"
    assert insufficient_data(_report(7), 7) is None


def test_drift_numbers_are_flat_floats_for_the_ui_plots() -> None:
    numbers = numeric_metadata(_report(7))
    assert numbers["drift_baseline_days"] == 7
    assert isinstance(numbers["phrase_accuracy_ks"], float)
    assert isinstance(numbers["phrase_accuracy_mean_shift"], float)


def test_preview_shows_misread_letters_first() -> None:
    rows = [
        {
            "activity_id": "a",
            "phrase_index": 0,
            "letter_index": i,
            "expected": "b",
            "recognized": "b",
            "status": "correct",
            "confidence": 0.99,
        }
        for i in range(12)
    ]
    rows.append({**rows[0], "letter_index": 12, "recognized": "d", "status": "substituted"})
    rows.append({**rows[0], "letter_index": 13, "recognized": None, "status": "deleted"})
    preview = misread_first_preview(pa.Table.from_pylist(rows))
    assert len(preview) == 10
    assert {r["status"] for r in preview[:2]} == {"substituted", "deleted"}


def test_partition_metadata_has_row_count_and_only_its_own_numbers() -> None:
    summary = StageSummary(Stage.LETTER_SCORES, "2026-11-27", phrases_in=4, phrases_ok=4)
    summary.row_count = 17
    metadata = partition_metadata(summary)
    assert metadata["dagster/row_count"].value == 17
    assert metadata["phrases_in"].value == 4
