"""The quality gates in the graph: defects stop publishing, clean partitions publish.

Scoring runs once for two clean days (activities → alignments). Each test then restores the
alignments stage tables, injects one defect, and runs the tail of the graph (letter_scores, its
checks, published_scores) against a real GraphQL server through `AppSyncPublisher`, so "nothing
reached the publisher" is what the server saw, not what a fake recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from asr_assets.assets.activities import activities
from asr_assets.assets.alignments import alignments
from asr_assets.assets.letter_scores import letter_scores, read_quarantine
from asr_assets.assets.phrase_audio import phrase_audio
from asr_assets.assets.published_scores import published_scores
from asr_assets.assets.transcripts import transcripts
from asr_assets.checks import ALL_CHECKS
from asr_assets.checks.checks import (
    activities_quality_gate,
    drift_plot_key,
    letter_scores_drift,
    letter_scores_quality_gate,
)
from asr_assets.checks.summary import check_outcomes
from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.publisher import AppSyncPublisher
from tests.support.data import PhraseSpec, write_day
from tests.support.graphql_server import AppSyncState, Fault, running_appsync
from tests.support.quality import clean_day, rewrite_parquet

pytestmark = pytest.mark.e2e

DAY_1, DAY_2 = "2026-11-25", "2026-11-26"
API_KEY = "da2-e2e-test-key"
UPSTREAM = [activities, phrase_audio, transcripts, alignments, activities_quality_gate]
TAIL = [letter_scores, published_scores, letter_scores_quality_gate, letter_scores_drift]


@dataclass
class Scored:
    root: Path
    store: LocalObjectStore
    resources: dict[str, object]
    instance: dg.DagsterInstance
    server: AppSyncState
    pristine: dict[Path, bytes]

    def restore(self) -> None:
        for path, data in self.pristine.items():
            path.write_bytes(data)

    def letters_table(self, day: str) -> Path:
        return (
            self.root / "stages" / "alignments" / f"activity_date={day}" / "letter_scores.parquet"
        )

    def run(self, assets: list, **kwargs: object) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def writes_for(self, day: str) -> list[dict]:
        return [w for w in self.server.writes.values() if w["activity_date"] == day]


def _range(first: str, last: str) -> dict[str, object]:
    return {
        "tags": {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        }
    }


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Scored]:
    root = tmp_path_factory.mktemp("quality-store")
    for day in (DAY_1, DAY_2):
        clean_day(root, date.fromisoformat(day))
    resources = dict(
        build_definitions(
            {"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(tiny_model_dir)}
        ).resources
    )
    with (
        pytest.MonkeyPatch.context() as patch,
        running_appsync(api_key=API_KEY) as (url, server),
        dg.instance_for_test() as instance,
    ):
        patch.setenv("ASR_RETRY_APPSYNC_INITIAL_S", "0.01")
        patch.setenv("ASR_RETRY_APPSYNC_MAX_S", "0.02")
        resources["publisher"] = AppSyncPublisher(url=url, api_key=API_KEY)
        upstream = dg.materialize(
            UPSTREAM, resources=resources, instance=instance, **_range(DAY_1, DAY_2)
        )
        assert upstream.success
        assert all(e.passed for e in upstream.get_asset_check_evaluations())
        stage = root / "stages" / "alignments"
        pristine = {path: path.read_bytes() for path in stage.rglob("*.parquet")}
        yield Scored(root, resources["store"], resources, instance, server, pristine)  # type: ignore[arg-type]


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def _started(result: dg.ExecuteInProcessResult, step: str) -> bool:
    return any(e.event_type_value == "STEP_START" and e.step_key == step for e in result.all_events)


def test_clean_partition_publishes(scored: Scored) -> None:
    scored.restore()
    result = scored.run(TAIL, partition_key=DAY_1)
    assert result.success
    evaluations = _evaluations(result)
    gates = {name: e for name, e in evaluations.items() if name != "letter_scores_drift"}
    assert all(e.passed for e in gates.values()), [
        e.description for e in gates.values() if not e.passed
    ]
    assert len(evaluations) == 7  # six gate checks + drift
    drift = evaluations["letter_scores_drift"]
    assert drift.severity == dg.AssetCheckSeverity.WARN
    # One trailing day of history is not a baseline: a warning, never a silent pass.
    assert not drift.passed
    assert drift.description.startswith("insufficient data (")
    assert evaluations["letter_scores_values"].partition == DAY_1
    assert _materialized(result) == {"letter_scores", "published_scores"}
    manifest = json.loads(
        (
            scored.root / "results" / "letter_scores" / f"activity_date={DAY_1}" / "_SUCCESS"
        ).read_text()
    )
    writes = [w for w in scored.writes_for(DAY_1) if w["run_id"] == manifest["run_id"]]
    assert sorted(w["activity_id"] for w in writes) == ["act-1", "act-2"]
    assert read_quarantine(scored.store, DAY_1) is None
    published = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == "published_scores"
    )
    assert published["activities_published"].value == 2
    assert published["activities_failed"].value == 0
    # The drift report's plot: on the check, on the asset partition, and in the store.
    observation = next(
        e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ).asset_observation_data.asset_observation
    assert observation.partition == DAY_1
    assert "phrase_accuracy" in observation.metadata["score_distribution"].value
    assert scored.store.exists(drift_plot_key(DAY_1))
    assert [o.check for o in check_outcomes(result) if not o.passed] == ["letter_scores_drift"]


def _confidence_out_of_range(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("confidence")
    values = table.column("confidence").to_pylist()
    values[0] = 1.7
    return table.set_column(index, "confidence", pa.array(values, pa.float32()))


def _duplicated_rows(table: pa.Table) -> pa.Table:
    expected = table.filter(pc.not_equal(table.column("status"), "inserted"))
    return pa.concat_tables([table, expected.slice(0, 2)])


def _mixed_model_hashes(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("model_sha256")
    values = table.column("model_sha256").to_pylist()
    values[::3] = ["f" * 64] * len(values[::3])
    return table.set_column(index, "model_sha256", pa.array(values, pa.string()))


DEFECTS: dict[str, tuple[Callable[[pa.Table], pa.Table], str]] = {
    "out-of-range confidence": (_confidence_out_of_range, "letter_scores_values"),
    "duplicated rows": (_duplicated_rows, "letter_scores_completeness"),
    "mixed model hashes": (_mixed_model_hashes, "letter_scores_model"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_blocks_publishing(scored: Scored, defect: str) -> None:
    inject, check = DEFECTS[defect]
    scored.restore()
    rewrite_parquet(scored.letters_table(DAY_2), inject)
    calls_before = len(scored.server.calls)

    result = scored.run(TAIL, partition_key=DAY_2)

    assert not result.success
    evaluations = _evaluations(result)
    failed_gates = {
        n for n, e in evaluations.items() if not e.passed and n != "letter_scores_drift"
    }
    assert failed_gates == {check}
    failed = evaluations[check]
    assert failed.partition == DAY_2
    metadata = {k: v.value for k, v in failed.metadata.items()}
    assert metadata["unexpected_count"] > 0
    assert metadata["failed_expectations"] and metadata["offending_rows"]
    assert "student-secret" not in json.dumps(metadata, default=str)
    assert "published_scores" not in _materialized(result)
    assert not _started(result, "published_scores")
    assert len(scored.server.calls) == calls_before  # nothing reached the publisher

    report = read_quarantine(scored.store, DAY_2)
    assert report is not None and report.gates["letter_scores"].failed_checks == [check]
    assert any(f["sample_rows"] for f in report.gates["letter_scores"].failed_expectations)

    # Publishing the quarantined partition on its own is refused too.
    alone = scored.run([published_scores], partition_key=DAY_2)
    assert not alone.success
    assert "quarantined" in str(alone.get_step_failure_events()[0].step_failure_data.error)
    assert len(scored.server.calls) == calls_before


def test_multi_partition_run_quarantines_only_the_bad_day(scored: Scored) -> None:
    scored.restore()
    rewrite_parquet(scored.letters_table(DAY_2), _confidence_out_of_range)
    calls_before = len(scored.server.calls)

    result = scored.run(TAIL, **_range(DAY_1, DAY_2))

    assert not result.success
    values = _evaluations(result)["letter_scores_values"]
    assert not values.passed
    metadata = {k: v.value for k, v in values.metadata.items()}
    assert metadata["partitions"] == f"{DAY_1}, {DAY_2}"
    assert list(metadata["quarantined_partitions"]) == [DAY_2]
    assert {f["partition"] for f in metadata["failed_expectations"]} == {DAY_2}
    assert read_quarantine(scored.store, DAY_1) is None
    assert read_quarantine(scored.store, DAY_2) is not None
    assert len(scored.server.calls) == calls_before

    # The next publish delivers the clean day and refuses the quarantined one.
    publish = scored.run([published_scores], **_range(DAY_1, DAY_2))
    assert not publish.success
    failure = publish.get_step_failure_events()[0].step_failure_data
    assert "quarantined, not published: 2026-11-26" in str(failure.user_failure_data.description)
    counts = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert counts["activities_published"] == 2
    assert list(counts["partitions_quarantined"]) == [DAY_2]
    new_calls = scored.server.calls[calls_before:]
    assert len(new_calls) == 2
    run_id = json.loads(
        (
            scored.root / "results" / "letter_scores" / f"activity_date={DAY_1}" / "_SUCCESS"
        ).read_text()
    )["run_id"]
    assert {w["activity_date"] for w in scored.server.writes.values() if w["run_id"] == run_id} == {
        DAY_1
    }


def test_unsafe_key_past_a_broken_validator_stops_the_run(
    scored: Scored, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: if the activities stage ever let an unsafe key through, the gate holds."""
    day = "2026-11-27"
    phrases = clean_day(scored.root, date.fromisoformat(day))
    write_day(
        scored.root,
        date.fromisoformat(day),
        [*phrases, PhraseSpec("act-9", 0, "b", None, "audio/../../etc/passwd")],
    )
    monkeypatch.setattr("asr_assets.assets.activities.validate_key", lambda key: key)
    calls_before = len(scored.server.calls)

    result = scored.run([*ALL_ASSETS, *ALL_CHECKS], partition_key=day)

    assert not result.success
    failed = {name for name, e in _evaluations(result).items() if not e.passed}
    assert failed == {"activities_values"}
    assert _materialized(result) == {"activities"}
    assert not _started(result, "phrase_audio")
    assert not _started(result, "published_scores")
    assert len(scored.server.calls) == calls_before
    report = read_quarantine(scored.store, day)
    assert report is not None and list(report.gates) == ["activities"]
    text = json.dumps(report.model_dump(mode="json"))
    assert "etc/passwd" not in text and "audio_key_problem" in text


def _one_letter_unaligned(table: pa.Table) -> pa.Table:
    rows = table.to_pylist()
    row = next(r for r in rows if r["status"] != "inserted")
    row.update(status="unaligned", start_s=None, end_s=None, unaligned_reason="alignment_failed")
    return pa.Table.from_pylist(rows, schema=table.schema)


def test_thresholds_are_run_configuration(scored: Scored) -> None:
    """One phrase with an unaligned letter (the share is weighted by phrases, not letters)
    passes a lenient share given per run and fails a strict one."""
    scored.restore()
    rewrite_parquet(scored.letters_table(DAY_1), _one_letter_unaligned)
    lenient = {"resources": {"data_quality": {"config": {"max_unaligned_share": 0.5}}}}
    assert scored.run(TAIL, partition_key=DAY_1, run_config=lenient).success
    strict = {"resources": {"data_quality": {"config": {"max_unaligned_share": 0.05}}}}
    result = scored.run(TAIL, partition_key=DAY_1, run_config=strict)
    assert not result.success
    failed = _evaluations(result)["letter_scores_unaligned_share"]
    assert not failed.passed
    assert failed.metadata["observed"].value[DAY_1]["max_unaligned_share"] == 0.05


def test_partial_publish_failure_is_counted(scored: Scored) -> None:
    """A rejected delivery fails the asset, with the counts on the failure event."""
    scored.restore()
    assert scored.run(TAIL, partition_key=DAY_1).success
    scored.server.activity_faults["act-2"] = Fault.REJECT
    try:
        result = scored.run([published_scores], partition_key=DAY_1)
    finally:
        scored.server.activity_faults.clear()
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    counts = {k: v.value for k, v in failure.metadata.items()}
    assert counts["activities_failed"] == 1
    assert counts["activities_duplicate"] == 1  # act-1 was delivered by the gated run
    assert counts["publish_failures_by_reason"] == {"graphql_BadRequestException": 1}
    assert "deliveries failed: 2026-11-25 (1)" in str(failure.description)
