"""Both shipped workloads as real jobs in a temporary instance, and the daily graph agreement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.definitions import ALL_ASSETS, local_resources
from asr_assets.platform.jobs import (
    JobRequest,
    JobState,
    Priority,
    cancel,
    results,
    status,
    submit,
)
from tests.support.jobs import (
    REPO,
    SAMPLE_STORE,
    JobEnv,
    job_env,
    wait_for,
    write_instance_yaml,
    write_manifest,
)

__all__ = ["job_env"]
pytestmark = pytest.mark.e2e
DAY = "2026-11-27"
DEMO_MODEL = REPO / "models" / "demo-letters"


def _rows(store: Path, files: list[str]) -> list[dict]:
    return [row for f in files for row in pq.read_table(store / f).to_pylist()]


def test_letter_scoring_job_agrees_with_the_daily_graph(job_env: JobEnv) -> None:
    shutil.copytree(SAMPLE_STORE, job_env.store, dirs_exist_ok=True)
    catalog = pq.read_table(next((job_env.store / "catalog").rglob("*.parquet"))).to_pylist()
    whole = [r for r in catalog if r["audio_start_s"] is None]
    manifest = [{"key": r["audio_key"], "expected_text": r["expected_text"]} for r in whole]
    manifest += [
        {"key": "audio/2026-11-27/nope/0.flac", "expected_text": "a b"},
        {"key": "secret/elsewhere.flac", "expected_text": "a"},
        {"key": "audio/2026-11-27/x/../../../etc/passwd", "expected_text": "a"},
        {"key": whole[0]["audio_key"]},
    ]
    write_manifest(job_env.store, "jobs/m1.jsonl", manifest)
    job_id = submit(
        JobRequest(
            workload="letter-scoring:1",
            manifest="jobs/m1.jsonl",
            key_prefixes=["audio"],
            output_prefix="results-jobs/m1",
            tenant="tenant-a",
            team="reading",
            cost_center="cc-42",
            priority=Priority.HIGH,
            params={"shard_size": "64"},
        ),
        instance=job_env.instance,
    )
    done = wait_for(job_id, job_env.instance, timeout_s=300)
    assert done.state is JobState.COMPLETED, done.failure_reason
    assert done.workload == "letter-scoring:1.1.0"
    assert done.tags["asr/tenant"] == "tenant-a" and done.tags["asr/cost-center"] == "cc-42"
    run = job_env.instance.get_run_by_id(done.run_id)
    assert run.tags["dagster/priority"] == "10" and run.tags["asr/team"] == "reading"
    assert done.progress.total == len(manifest)
    assert done.errors_by_reason["audio_missing"] == 1
    assert done.errors_by_reason["key_outside_prefix"] == 1
    assert done.errors_by_reason["unsafe_audio_key"] == 1
    assert done.errors_by_reason["missing_field"] == 1
    assert done.usage.files == len(whole) and done.usage.audio_seconds > 0
    assert done.usage.cpu_seconds > 0 and done.usage.bytes_in > 0

    got = results(job_id, instance=job_env.instance)
    job_rows = {r["key"]: r for r in _rows(job_env.store, got.result_files)}
    assert got.rows == len(whole) == len(job_rows)
    report = json.loads((job_env.store / got.report_key).read_text())
    assert report["files"] == len(manifest) and report["failed_shards"] == []

    graph = dg.materialize(
        ALL_ASSETS,
        partition_key=DAY,
        resources=local_resources(
            {
                "ASR_DATA_ROOT": str(job_env.store),
                "ASR_MODEL_DIR": str(DEMO_MODEL),
                # The workload scores with the float torch engine; the graph's default is int8
                # ONNX, whose confidences differ by a few thousandths. Compared here: the logic.
                "ASR_ONNX_INT8": "false",
            }
        ),
        instance=job_env.instance,
    )
    assert graph.success
    letters = pq.read_table(
        next((job_env.store / f"results/letter_scores/activity_date={DAY}").glob("part-*.parquet"))
    ).to_pylist()
    phrases = pq.read_table(
        next((job_env.store / f"results/phrase_results/activity_date={DAY}").glob("part-*.parquet"))
    ).to_pylist()
    key_of = {(r["activity_id"], r["phrase_index"]): r["audio_key"] for r in whole}
    compared = 0
    for phrase in phrases:
        key = key_of.get((phrase["activity_id"], phrase["phrase_index"]))
        if key is None:
            continue
        row = job_rows[key]
        assert row["status"] == "ok"
        assert row["transcript"] == phrase["transcript"]
        assert row["n_correct"] == phrase["n_correct"]
        assert row["accuracy"] == pytest.approx(phrase["accuracy"])
        graph_letters = [
            letter
            for letter in letters
            if (letter["activity_id"], letter["phrase_index"])
            == (phrase["activity_id"], phrase["phrase_index"])
        ]
        assert [x["status"] for x in row["letters"]] == [x["status"] for x in graph_letters]
        for mine, theirs in zip(row["letters"], graph_letters, strict=True):
            assert mine["recognized"] == theirs["recognized"]
            assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=2e-3)
            if theirs["start_s"] is not None:
                assert mine["start_s"] == pytest.approx(theirs["start_s"], abs=0.021)
        compared += 1
    graph_errors = pq.read_table(
        next((job_env.store / f"results/errors/activity_date={DAY}").glob("part-*.parquet"))
    ).to_pylist()
    for error in graph_errors:
        key = key_of.get((error["activity_id"], error["phrase_index"]))
        if key is None:
            continue
        assert job_rows[key]["status"] == "error"
        assert job_rows[key]["reason_code"] == error["reason_code"]
        compared += 1
    assert compared == len(whole)


def test_transcribe_job_from_a_prefix(job_env: JobEnv) -> None:
    source = SAMPLE_STORE / "audio" / DAY / "3e4ffd28-0c09-4bcb-b709-587cd780b1d5"
    shutil.copytree(source, job_env.store / "team-b" / "calls")
    (job_env.store / "team-b" / "calls" / "notes.txt").write_text("not audio")
    job_id = submit(
        JobRequest(
            workload="transcribe:1",
            input_prefix="team-b/calls",
            output_prefix="team-b/out/t1",
            params={"shard_size": "2"},
        ),
        instance=job_env.instance,
    )
    done = wait_for(job_id, job_env.instance, timeout_s=300)
    assert done.state is JobState.COMPLETED, done.failure_reason
    got = results(job_id, instance=job_env.instance)
    files = sorted(p.name for p in source.iterdir())
    assert len(got.result_files) == -(-len(files) // 2)
    rows = _rows(job_env.store, got.result_files)
    assert sorted(Path(r["key"]).name for r in rows) == files
    for row in rows:
        assert row["status"] == "ok" and row["text"]
        assert row["model_name"] and len(row["model_sha256"]) == 64
        assert row["words"] and row["chars"]
        assert "".join(w["text"] for w in row["words"]) == "".join(c["text"] for c in row["chars"])
        for token in row["chars"] + row["words"]:
            assert 0 <= token["start_s"] < token["end_s"] <= row["duration_s"] + 0.05
            assert 0 <= token["confidence"] <= 1
    assert done.progress.done == len(files) and done.progress.total == len(files)


def test_an_empty_prefix_fails_the_job_with_a_clear_reason(job_env: JobEnv) -> None:
    (job_env.store / "empty").mkdir()
    job_id = submit(
        JobRequest(workload="transcribe", input_prefix="empty", output_prefix="out/e"),
        instance=job_env.instance,
    )
    done = wait_for(job_id, job_env.instance)
    assert done.state is JobState.FAILED
    assert "holds no audio" in (done.failure_reason or "")


def test_queued_job_is_canceled_through_the_run_coordinator(job_env: JobEnv) -> None:
    queued_home = job_env.home.parent / "queued-home"
    write_instance_yaml(queued_home, coordinator="QueuedRunCoordinator")
    with dg.DagsterInstance.from_config(str(queued_home)) as instance:
        job_id = submit(
            JobRequest(
                workload="transcribe:1",
                input_prefix="x",
                output_prefix="out/q",
                priority=Priority.LOW,
                job_id="queued-1",
            ),
            instance=instance,
        )
        assert job_id == "queued-1"
        queued = status(job_id, instance=instance)
        assert queued.state is JobState.QUEUED
        assert instance.get_run_by_id(queued.run_id).tags["dagster/priority"] == "-10"
        assert cancel(job_id, instance=instance).state is JobState.CANCELED
        with pytest.raises(ValueError, match="already exists"):
            submit(
                JobRequest(
                    workload="transcribe:1", input_prefix="x", output_prefix="o", job_id="queued-1"
                ),
                instance=instance,
            )
