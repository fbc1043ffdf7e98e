"""A workload rendered from the cookiecutter template runs as a job, platform code untouched."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from cookiecutter.main import cookiecutter

from asr_assets.platform.jobs import JobRequest, JobState, results, submit
from asr_assets.platform.workloads import WorkloadRegistry
from tests.support.data import tone, wav_bytes
from tests.support.jobs import REPO, JobEnv, job_env, wait_for

__all__ = ["job_env"]
pytestmark = pytest.mark.e2e


def test_rendered_template_passes_its_test_and_runs_as_a_job(job_env: JobEnv) -> None:
    rendered = cookiecutter(
        str(REPO / "templates" / "workload"),
        no_input=True,
        output_dir=str(job_env.workloads),
        extra_context={"workload_name": "team-x-stats", "owner_team": "team-x", "shard_size": "2"},
    )
    manifest = WorkloadRegistry.from_folders([job_env.workloads]).resolve("team-x-stats:0")
    assert manifest.owner_team == "team-x" and manifest.image.endswith("team-x-stats:0.1.0")
    own_test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_workload.py"],
        cwd=rendered,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert own_test.returncode == 0, own_test.stdout + own_test.stderr

    for i, seconds in enumerate((0.5, 0.75, 1.0)):
        (job_env.store / "x" / f"{i}.wav").parent.mkdir(parents=True, exist_ok=True)
        (job_env.store / "x" / f"{i}.wav").write_bytes(wav_bytes(tone(seconds)))
    (job_env.store / "x" / "broken.wav").write_bytes(b"RIFF nonsense")
    job_id = submit(
        JobRequest(workload="team-x-stats:0", input_prefix="x", output_prefix="x-out/1"),
        instance=job_env.instance,
    )
    done = wait_for(job_id, job_env.instance)
    assert done.state is JobState.COMPLETED, done.failure_reason
    assert done.errors_by_reason == {"audio_undecodable": 1}
    got = results(job_id, instance=job_env.instance)
    rows = [r for f in got.result_files for r in pq.read_table(job_env.store / f).to_pylist()]
    durations = sorted(r["duration_s"] for r in rows if r["status"] == "ok")
    assert durations == pytest.approx([0.5, 0.75, 1.0])
    assert got.rows == 4 and len(got.result_files) == 2
