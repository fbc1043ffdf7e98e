"""End to end: the jobs API on the real platform core (no engine double). PENDING.

Enable after merging the platform core: rename to `test_jobs_api_on_core.py`. It needs
`asr_assets.platform.jobs.submit/status/...` and the `transcribe:1` workload; adapt
`_inputs` if the core's input layout differs. Nothing here replaces the core with a double:
`PlatformJobsBackend` (the API's default) calls the core, which runs the job on the Dagster
instance in DAGSTER_HOME.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from asr_assets.platform.api.app import create_app
from asr_assets.platform.tenancy.settings import PlatformSettings
from tests.support.platform_api import bootstrap_admin, create_tenant, pg_url  # noqa: F401

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _inputs(store: Path) -> tuple[str, int]:
    """Copy the sample day's recordings under the tenant's prefix: (input prefix, files)."""
    source = ROOT / "data" / "sample-store" / "audio" / "2026-11-27"
    target = store / "tenants" / "team-a" / "in"
    shutil.copytree(source, target)
    return "tenants/team-a/in/", sum(1 for p in target.rglob("*") if p.is_file())


def test_a_job_through_the_api_runs_on_the_core(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster-home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # No queue daemon in this test: runs launch directly.
    config.pop("run_coordinator", None)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    store = tmp_path / "store"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ASR_DATA_ROOT", str(store))
    input_prefix, files = _inputs(store)

    admin = bootstrap_admin(pg_url)
    app = create_app(PlatformSettings(database_url=pg_url, watch_interval_s=0.5))
    with TestClient(app) as client:
        tenant = create_tenant(client, admin, "team-a", allowed_prefixes=["tenants/team-a/"])
        headers = {"Authorization": f"Bearer {tenant['api_key']}"}
        assert client.get("/readyz").status_code == 200
        response = client.post(
            "/jobs",
            headers={**headers, "Idempotency-Key": "e2e-1"},
            json={
                "workload": "transcribe:1",
                "input_prefix": input_prefix,
                "output_prefix": "tenants/team-a/out/",
                "priority": "high",
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 300
        job = response.json()
        while job["state"] not in {"COMPLETED", "FAILED", "CANCELED"}:
            assert time.monotonic() < deadline, job
            time.sleep(1)
            job = client.get(f"/jobs/{job_id}", headers=headers).json()
        assert job["state"] == "COMPLETED", job
        assert job["progress"]["total"] == files and job["progress"]["percent"] == 100.0
        assert job["usage"]["audio_seconds"] > 0 and job["usage"]["estimated_cost"] > 0
        assert job["run_id"]
        logs = client.get(f"/jobs/{job_id}/logs", headers=headers).json()
        assert logs["lines"]
        usage = client.get("/usage?group_by=workload", headers=headers).json()
        assert usage["rows"][0]["group"] == "transcribe:1"
        # The run carries the tenant and priority tags the queue works with.
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            run = instance.get_run_by_id(job["run_id"])
        assert run.tags["asr/tenant"] == "team-a" and run.tags["dagster/priority"] == "10"
