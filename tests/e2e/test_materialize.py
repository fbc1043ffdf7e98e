"""The whole graph on a generated day, with counts reconciled across every stage."""

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.definitions import ALL_ASSETS, build_definitions
from tests.support.data import STANDARD_DAY_ERRORS, standard_day

DAY = "2026-11-27"


@pytest.fixture(scope="module")
def scored_day(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    root = tmp_path_factory.mktemp("store")
    phrases = standard_day(root, date(2026, 11, 27))
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ALL_ASSETS, partition_key=DAY, resources=definitions.resources, instance=instance
        )
        assert result.success
        yield root, phrases, result, definitions, instance


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        event.materialization.asset_key.path[-1]: {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def test_counts_reconcile_at_every_stage(scored_day) -> None:
    _, phrases, result, _, _ = scored_day
    metadata = _metadata(result)
    assert set(metadata) == {a.key.path[-1] for a in ALL_ASSETS}
    for stage, values in metadata.items():
        assert values["phrases_in"] == len(phrases), stage
        assert values["phrases_ok"] + values["phrases_errored"] == values["phrases_in"], stage
        assert values["reconciled"] is True, stage
    assert metadata["letter_scores"]["phrases_errored"] == len(STANDARD_DAY_ERRORS)


def test_result_partition_holds_every_phrase(scored_day) -> None:
    root, phrases, result, _, _ = scored_day
    prefix = root / "results"
    manifest = json.loads(
        (prefix / "letter_scores" / f"activity_date={DAY}" / "_SUCCESS").read_text()
    )
    assert manifest["run_id"] == result.run_id
    assert manifest["phrases_in"] == len(phrases)
    assert manifest["model"]["name"] == "tiny-random"
    letters = pq.read_table(root / manifest["files"]["letter_scores"]).to_pylist()
    phrase_rows = pq.read_table(root / manifest["files"]["phrase_results"]).to_pylist()
    errors = pq.read_table(root / manifest["files"]["errors"]).to_pylist()
    scored = {(p["activity_id"], p["phrase_index"]) for p in phrase_rows}
    failed = {(e["activity_id"], e["phrase_index"]): e["reason_code"] for e in errors}
    assert failed == STANDARD_DAY_ERRORS
    assert scored | set(failed) == {(p.activity_id, p.phrase_index) for p in phrases}
    assert not scored & set(failed)
    # one row per expected letter for every scored phrase
    for phrase in phrase_rows:
        rows = [
            r
            for r in letters
            if (r["activity_id"], r["phrase_index"])
            == (phrase["activity_id"], phrase["phrase_index"])
            and r["status"] != "inserted"
        ]
        assert [r["expected"] for r in rows] == phrase["expected_text"].split(" ")
        assert all(0.0 <= r["confidence"] <= 1.0 for r in rows)
    assert {r["model_sha256"] for r in letters} == {manifest["model"]["sha256"]}


def test_segment_cut_from_one_recording(scored_day) -> None:
    root, _, _, _, _ = scored_day
    # One partition manifest (letter_scores/_SUCCESS) names every table's file.
    assert not (root / "results" / "phrase_results" / f"activity_date={DAY}" / "_SUCCESS").exists()
    manifest = json.loads(
        (root / "results" / "letter_scores" / f"activity_date={DAY}" / "_SUCCESS").read_text()
    )
    rows = pq.read_table(root / manifest["files"]["phrase_results"]).to_pylist()
    durations = {(r["activity_id"], r["phrase_index"]): r["duration_s"] for r in rows}
    assert durations[("act-2", 0)] == pytest.approx(1.2, abs=0.01)
    assert durations[("act-2", 1)] == pytest.approx(1.5, abs=0.01)


def test_published_one_record_per_activity_without_student_ids(scored_day) -> None:
    root, _, _, _, _ = scored_day
    lines = (
        (root / "published" / "activity_results" / f"activity_date={DAY}.jsonl")
        .read_text()
        .splitlines()
    )
    records = [json.loads(line) for line in lines]
    assert sorted(r["activity_id"] for r in records) == ["act-1", "act-2", "act-3"]
    act3 = next(r for r in records if r["activity_id"] == "act-3")
    assert act3["n_errors"] == 5 and act3["n_scored"] == 0
    assert "student-secret" not in "\n".join(lines)


def test_rerun_replaces_the_partition_and_reuses_caches(scored_day) -> None:
    root, _, _, definitions, instance = scored_day
    second = dg.materialize(
        ALL_ASSETS, partition_key=DAY, resources=definitions.resources, instance=instance
    )
    assert second.success
    metadata = _metadata(second)
    assert metadata["phrase_audio"]["clips_cached"] == 5
    assert metadata["transcripts"]["phrases_by_engine"] == {"cache": 5}
    partition = root / "results" / "letter_scores" / f"activity_date={DAY}"
    assert sorted(p.name for p in partition.iterdir()) == [
        "_SUCCESS",
        f"part-{second.run_id}.parquet",
    ]
    assert json.loads((partition / "_SUCCESS").read_text())["run_id"] == second.run_id
    published = metadata["published_scores"]
    assert published["activities_published"] == 3  # a new run is a new version of each record
    lines = (
        (root / "published" / "activity_results" / f"activity_date={DAY}.jsonl")
        .read_text()
        .splitlines()
    )
    assert len(lines) == 3


def test_student_ids_never_reach_logs(scored_day) -> None:
    _, _, result, _, instance = scored_day
    records = instance.all_logs(result.run_id)
    text = "\n".join(str(record.user_message) for record in records)
    assert "student-secret" not in text


def test_one_run_scores_several_partitions(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The backfill policy groups days per run; each day gets its own committed partition."""
    days = [date(2026, 11, 25), date(2026, 11, 26)]
    for day in days:
        standard_day(tmp_path, day)
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(tmp_path), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            resources=definitions.resources,
            tags={
                "dagster/asset_partition_range_start": "2026-11-25",
                "dagster/asset_partition_range_end": "2026-11-26",
            },
            instance=instance,
        )
        assert result.success
        for day in days:
            manifest = json.loads(
                (
                    tmp_path / "results" / "letter_scores" / f"activity_date={day}" / "_SUCCESS"
                ).read_text()
            )
            assert manifest["run_id"] == result.run_id and manifest["phrases_in"] == 10
        materialized = instance.get_materialized_partitions(dg.AssetKey("letter_scores"))
        assert materialized == {d.isoformat() for d in days}
