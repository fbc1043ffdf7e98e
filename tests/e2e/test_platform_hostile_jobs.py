"""Hostile workloads through real jobs: non-zero exit, hang, garbage output; rerun, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from asr_assets.platform.jobs import (
    JobRequest,
    JobState,
    cancel,
    results,
    resume,
    status,
    submit,
)
from tests.support.data import tone, wav_bytes
from tests.support.jobs import JobEnv, job_env, launches, scripted_workload, wait_for

__all__ = ["job_env"]
pytestmark = pytest.mark.e2e


def _audio(store: Path, prefix: str, count: int) -> list[str]:
    keys = []
    for i in range(count):
        key = f"{prefix}/clip-{i}.wav"
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(wav_bytes(tone(0.5, freq=200 + 20 * i)))
        keys.append(key)
    return keys


def _committed(store: Path, out: str) -> dict[int, dict]:
    found = {}
    for success in sorted((store / out / "shards").glob("shard-*/_SUCCESS")):
        record = json.loads(success.read_text())
        found[int(record["shard"])] = record
    return found


def test_failed_shards_keep_good_ones_and_a_rerun_retries_only_them(job_env: JobEnv) -> None:
    scripted_workload(job_env.workloads, timeout_s=3)
    keys = _audio(job_env.store, "in", 4)
    request = JobRequest(
        workload="scripted:1",
        input_prefix="in",
        output_prefix="out/hostile",
        params={"prefix": "in", "shard_1": "exit", "shard_2": "hang", "shard_3": "garbage"},
        tenant="tenant-a",
    )
    job_id = submit(request, instance=job_env.instance)
    first = wait_for(job_id, job_env.instance)

    assert first.state is JobState.FAILED
    assert first.failed_shards == [1, 2, 3]
    assert "shard_nonzero_exit" in first.failure_reason
    assert "shard_timeout" in first.failure_reason
    assert "shard_bad_output" in first.failure_reason
    assert first.progress.total == 4 and first.progress.done == 1 and first.progress.failed == 3
    committed = _committed(job_env.store, "out/hostile")
    assert list(committed) == [0]
    assert not list((job_env.store / "out/hostile/_job").glob("staging/*/*.parquet"))
    assert sorted(launches(job_env.store, "in")) == [0, 1, 2, 3]

    (job_env.store / "in" / "fixed").write_text("")
    resume(job_id, instance=job_env.instance)
    second = wait_for(job_id, job_env.instance)

    assert second.state is JobState.COMPLETED, second.failure_reason
    assert second.failed_shards == []
    assert sorted(launches(job_env.store, "in")) == [0, 1, 1, 2, 2, 3, 3]
    committed = _committed(job_env.store, "out/hostile")
    assert committed[0]["run_id"] == first.run_id  # not redone
    assert {committed[s]["run_id"] for s in (1, 2, 3)} == {second.run_id}
    got = results(job_id, instance=job_env.instance)
    assert got.rows == 4 and len(got.result_files) == 4
    written = sorted(
        k for f in got.result_files for k in pq.read_table(job_env.store / f)["key"].to_pylist()
    )
    assert written == sorted(keys)
    assert second.usage.files == 4 and second.usage.bytes_out > 0 and second.usage.wall_seconds > 0


def test_sigkill_mid_job_then_resume_commits_each_shard_once(job_env: JobEnv) -> None:
    scripted_workload(job_env.workloads)
    keys = _audio(job_env.store, "slow", 6)
    params = {"prefix": "slow", "slow_s": "1.0", **{f"shard_{i}": "slow" for i in range(6)}}
    job_id = submit(
        JobRequest(workload="scripted", input_prefix="slow", output_prefix="out/k", params=params),
        instance=job_env.instance,
    )
    progress_path = job_env.store / "out/k/_job/progress.json"
    deadline = time.monotonic() + 120
    while True:
        record = json.loads(progress_path.read_text()) if progress_path.exists() else {}
        if record.get("shards_committed", 0) >= 2:
            break
        assert time.monotonic() < deadline, "job made no progress"
        time.sleep(0.2)
    os.kill(int(record["worker_pid"]), signal.SIGKILL)
    time.sleep(1.5)  # the in-flight shard notices its launcher is gone and exits
    killed = status(job_id, instance=job_env.instance)
    # The code server may already have noticed its run worker died (FAILED); if not, the run
    # still reads as started and resume is told the worker is dead.
    assert killed.state in (JobState.IN_PROGRESS, JobState.FAILED)
    before = _committed(job_env.store, "out/k")
    assert 2 <= len(before) < 6

    resume(job_id, instance=job_env.instance, mark_dead_run_failed=True)
    final = wait_for(job_id, job_env.instance)

    assert final.state is JobState.COMPLETED, final.failure_reason
    after = _committed(job_env.store, "out/k")
    assert sorted(after) == list(range(6))
    for shard, record in before.items():
        assert after[shard]["run_id"] == record["run_id"]  # committed once, never redone
    runs = launches(job_env.store, "slow")
    assert all(runs.count(shard) == 1 for shard in before)  # committed shards not relaunched
    assert all(runs.count(shard) <= 2 for shard in range(6))  # at most the in-flight one twice
    written = sorted(
        k
        for f in sorted((job_env.store / "out/k/shards").glob("*/part-0.parquet"))
        for k in pq.read_table(f)["key"].to_pylist()
    )
    assert written == sorted(keys)


def test_cancel_terminates_a_running_job_and_its_workload(job_env: JobEnv) -> None:
    scripted_workload(job_env.workloads)
    _audio(job_env.store, "long", 1)
    params = {"prefix": "long", "shard_0": "slow", "slow_s": "120"}
    job_id = submit(
        JobRequest(workload="scripted", input_prefix="long", output_prefix="out/c", params=params),
        instance=job_env.instance,
    )
    log = job_env.store / "long" / "launches.log"
    deadline = time.monotonic() + 120
    while not log.exists():
        assert time.monotonic() < deadline, "the shard never started"
        time.sleep(0.2)
    shard_pid = int(log.read_text().split()[1])
    assert cancel(job_id, instance=job_env.instance).state in (
        JobState.IN_PROGRESS,
        JobState.CANCELED,
    )
    final = wait_for(job_id, job_env.instance, timeout_s=60)
    assert final.state is JobState.CANCELED
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(shard_pid, 0)  # the workload's process group went with the run
    assert not (job_env.store / "out/c/shards").exists()
