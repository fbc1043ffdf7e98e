"""The quarantine marker: written by failed gates, lifted by passing ones, honoured by publish."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from asr_assets.assets.letter_scores import (
    QuarantineEntry,
    quarantine_key,
    quarantine_partition,
    read_quarantine,
    release_quarantine,
)
from asr_assets.assets.published_scores import (
    PartitionQuarantinedError,
    publish_partition,
    publish_run,
)
from asr_assets.checks.checks import check_result, judge_partition
from asr_assets.checks.models import CheckOutcome, ExpectationFailure
from asr_assets.checks.summary import CheckSummary, format_check_outcomes
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.publisher import LocalJsonlPublisher
from tests.support.quality import commit_partition, result_partition

DAY = "2026-11-27"


def _entry(gate: str, result_run_id: str | None = "run-1") -> QuarantineEntry:
    return QuarantineEntry(
        gate=gate,
        check_run_id="check-run",
        result_run_id=result_run_id,
        quarantined_at=datetime(2026, 11, 28, tzinfo=UTC),
        failed_checks=[f"{gate}_values"],
        summary="test",
        failed_expectations=[],
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path), min_free_bytes=0)


def test_entries_per_gate(store: LocalObjectStore) -> None:
    assert read_quarantine(store, DAY) is None
    key = quarantine_partition(store, DAY, _entry("letter_scores"))
    assert key == f"results/letter_scores/activity_date={DAY}/_QUARANTINED"
    quarantine_partition(store, DAY, _entry("activities", None))
    report = read_quarantine(store, DAY)
    assert report is not None and sorted(report.gates) == ["activities", "letter_scores"]
    assert "rematerialize letter_scores" in report.how_to_release
    # A pass on other data does not lift a verdict on this data.
    assert not release_quarantine(store, DAY, "letter_scores", result_run_id="run-2")
    assert release_quarantine(store, DAY, "letter_scores", result_run_id="run-1")
    assert sorted(read_quarantine(store, DAY).gates) == ["activities"]  # type: ignore[union-attr]
    assert release_quarantine(store, DAY, "activities")
    assert not store.exists(quarantine_key(DAY))
    assert not release_quarantine(store, DAY, "activities")


def _outcome(check: str, failed: bool, partition: str = DAY) -> CheckOutcome:
    failures = (
        (
            ExpectationFailure(
                check=check,
                frame="letter_scores",
                expectation="expect_column_values_to_be_between",
                columns=("confidence",),
                unexpected_count=2,
                unexpected_percent=10.0,
                bounds={"min_value": 0.0, "max_value": 1.0},
                sample_rows=({"activity_id": "a", "confidence": 1.7},),
            ),
        )
        if failed
        else ()
    )
    return CheckOutcome(check, partition, evaluated=3, rows_checked=20, failures=failures)


def test_judge_quarantines_and_releases(store: LocalObjectStore) -> None:
    failed = [_outcome("letter_scores_values", True), _outcome("letter_scores_model", False)]
    location = judge_partition(store, DAY, "letter_scores", failed, "check-run", "run-1")
    assert location is not None and location.endswith("_QUARANTINED")
    report = read_quarantine(store, DAY)
    assert report is not None
    entry = report.gates["letter_scores"]
    assert entry.failed_checks == ["letter_scores_values"]
    assert entry.failed_expectations[0]["sample_rows"] == [{"activity_id": "a", "confidence": 1.7}]
    assert "2 rows unexpected" in entry.summary
    passed = [_outcome("letter_scores_values", False)]
    assert judge_partition(store, DAY, "letter_scores", passed, "check-run-2", "run-1") is None
    assert read_quarantine(store, DAY) is None


def test_check_result_metadata_over_partitions() -> None:
    outcomes = [
        _outcome("letter_scores_values", False, "2026-11-26"),
        _outcome("letter_scores_values", True, "2026-11-27"),
    ]
    result = check_result("letter_scores_values", outcomes, {"2026-11-27": "/q/_QUARANTINED"})
    assert not result.passed
    metadata = {k: v.value for k, v in result.metadata.items()}
    assert metadata["partitions"] == "2026-11-26, 2026-11-27"
    assert metadata["unexpected_count"] == 2
    assert metadata["expectations_evaluated"] == 6
    assert metadata["failed_expectations"][0]["partition"] == "2026-11-27"
    assert metadata["quarantined_partitions"] == {"2026-11-27": "/q/_QUARANTINED"}
    assert "| a | 1.700 |" in metadata["offending_rows"]
    assert check_result("letter_scores_values", outcomes[:1], {}).passed


def test_publish_refuses_a_quarantined_partition(store: LocalObjectStore) -> None:
    publisher = LocalJsonlPublisher(store=store)
    for day in ("2026-11-26", DAY):
        manifest, tables = result_partition(day)
        commit_partition(store, day, tables, manifest)
    quarantine_partition(store, DAY, _entry("letter_scores"))
    with pytest.raises(PartitionQuarantinedError, match="quarantined by letter_scores"):
        publish_partition(store, publisher, DAY)
    run = publish_run(store, publisher, ["2026-11-26", DAY])
    assert list(run.reports) == ["2026-11-26"]
    assert run.reports["2026-11-26"].published == 3
    assert list(run.quarantined) == [DAY]
    totals = {k: v.value for k, v in run.totals().items()}
    assert totals["activities_published"] == 3
    assert totals["partitions_quarantined"] == {DAY: store.uri(quarantine_key(DAY))}
    assert not Path(publisher.destination(DAY)).exists()


def test_cli_lines() -> None:
    lines = format_check_outcomes(
        [
            CheckSummary("letter_scores", "letter_scores_values", True, "ERROR", None),
            CheckSummary("letter_scores", "letter_scores_drift", False, "WARN", "shifted"),
        ]
    )
    # A WARN check that did not pass is a warning, not a failure: it never stops a run.
    assert lines[0].split() == ["checks", "1", "passed,", "0", "failed,", "1", "warning(s)"]
    assert "WARN letter_scores.letter_scores_drift: shifted" in lines[1]
