"""End to end: the jobs API on the real platform core (no engine double).

`PlatformJobsBackend` (the API's default) calls the core's Python API, which runs the job on the
Dagster instance in DAGSTER_HOME; the API's job records live in the real PostgreSQL server.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from asr_assets.platform.api.app import create_app
from asr_assets.platform.tenancy.settings import PlatformSettings
from tests.support.platform_api import bootstrap_admin, create_tenant, pg_url  # noqa: F401

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ACTIVITY = (
    ROOT / "data" / "sample-store" / "audio" / "2026-11-27" / "3e4ffd28-0c09-4bcb-b709-587cd780b1d5"
)


def _inputs(store: Path) -> tuple[str, list[str]]:
    """One activity's recordings under the tenant's prefix: (input prefix, file names)."""
    target = store / "tenants" / "team-a" / "in"
    shutil.copytree(ACTIVITY, target)
    # Not audio: the core lists the prefix by the workload's extensions and skips it.
    (target / "notes.txt").write_text("not audio")
    return "tenants/team-a/in/", sorted(p.name for p in ACTIVITY.iterdir())


def _instance_home(home: Path) -> None:
    """The repository's instance config, launching runs at once (no queue daemon in this test).

    Dagster's default coordinator is the queued one, so dropping `run_coordinator` is not
    enough: the runs would wait for a daemon forever.
    """
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def test_a_job_through_the_api_runs_on_the_core(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, store = tmp_path / "dagster-home", tmp_path / "store"
    _instance_home(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ASR_DATA_ROOT", str(store))
    monkeypatch.setenv("ASR_TORCH_THREADS", "1")
    input_prefix, names = _inputs(store)

    admin = bootstrap_admin(pg_url)
    app = create_app(PlatformSettings(database_url=pg_url, watch_interval_s=0.5))
    with TestClient(app) as client:
        tenant = create_tenant(
            client, admin, "team-a", allowed_prefixes=["tenants/team-a/"], team="speech"
        )
        headers = {"Authorization": f"Bearer {tenant['api_key']}"}
        assert client.get("/readyz").status_code == 200
        workloads = client.get("/workloads", headers=headers).json()
        assert {"letter-scoring", "transcribe"} <= {w["name"] for w in workloads}
        response = client.post(
            "/jobs",
            headers={**headers, "Idempotency-Key": "e2e-1"},
            json={
                "workload": "transcribe:1",
                "input_prefix": input_prefix,
                "output_prefix": "tenants/team-a/out/",
                "priority": "high",
                "params": {"shard_size": "2"},
                "tags": {"project": "e2e"},
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        # A workload the registry does not know is the client's mistake: 422, nothing runs.
        unknown = client.post(
            "/jobs",
            headers=headers,
            json={
                "workload": "no-such-workload:1",
                "input_prefix": input_prefix,
                "output_prefix": "tenants/team-a/out2/",
            },
        )
        assert unknown.status_code == 422, unknown.text
        assert "no-such-workload" in unknown.json()["detail"]
        assert "Retry-After" not in unknown.headers
        deadline = time.monotonic() + 300
        job = response.json()
        seen: list[tuple[str, int, int]] = []
        while job["state"] not in {"COMPLETED", "FAILED", "CANCELED"}:
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = client.get(f"/jobs/{job_id}", headers=headers).json()
            seen.append((job["state"], job["progress"]["done"], job["progress"]["total"]))
        assert job["state"] == "COMPLETED", job
        # While it ran, GET /jobs/{id} already knew how many files the job has.
        assert ("IN_PROGRESS", len(names)) in {(state, total) for state, _, total in seen}, seen
        assert job["progress"] == {
            "done": len(names),
            "failed": 0,
            "total": len(names),
            "percent": 100.0,
        }
        assert job["usage"]["files"] == len(names)
        assert job["usage"]["audio_seconds"] > 0 and job["usage"]["estimated_cost"] > 0
        assert job["usage"]["bytes_in"] > 0 and job["usage"]["bytes_out"] > 0
        assert job["results_prefix"] == "tenants/team-a/out/"
        assert job["started_at"] and job["finished_at"] and job["run_id"]
        # The results are where the job says: one committed shard per two files.
        shards = sorted((store / "tenants" / "team-a" / "out" / "shards").glob("*/part-*.parquet"))
        assert len(shards) == -(-len(names) // 2), shards
        keys = [k for s in shards for k in pq.read_table(s).column("key").to_pylist()]
        assert sorted(Path(k).name for k in keys) == names
        # The local store has no object tags: each commit record carries the job's tags.
        record = json.loads((shards[0].parent / "_SUCCESS").read_text())
        assert record["tags"]["asr/tenant"] == "team-a" and record["tags"]["project"] == "e2e"

        logs = client.get(f"/jobs/{job_id}/logs", headers=headers).json()
        assert logs["run_id"] == job["run_id"] and logs["lines"]
        usage = client.get("/usage?group_by=workload", headers=headers).json()
        assert usage["rows"][0]["group"] == "transcribe:1"
        assert usage["rows"][0]["files"] == len(names)

        page = client.get(f"/jobs/{job_id}", headers={**headers, "Accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "COMPLETED" in page.text and 'aria-valuenow="100.0"' in page.text
        assert f"{len(names)} of {len(names)} files done" in page.text
        assert "tenants/team-a/out/" in page.text
        # The same request again is the same job (idempotency across the real engine).
        again = client.post(
            "/jobs",
            headers={**headers, "Idempotency-Key": "e2e-1"},
            json={
                "workload": "transcribe:1",
                "input_prefix": input_prefix,
                "output_prefix": "tenants/team-a/out/",
                "priority": "high",
                "params": {"shard_size": "2"},
                "tags": {"project": "e2e"},
            },
        )
        assert again.status_code == 202 and again.json()["job_id"] == job_id
        assert again.headers["Idempotent-Replayed"] == "true"

    # The run carries the tenant, team, priority and the user's tags the queue and costs use.
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(job["run_id"])
    assert run is not None
    assert run.tags["asr/tenant"] == "team-a" and run.tags["asr/team"] == "speech"
    assert run.tags["dagster/priority"] == "10" and run.tags["asr/priority"] == "high"
    assert run.tags["asr/job"] == job_id and run.tags["project"] == "e2e"
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 1  # the refused submission launched nothing
