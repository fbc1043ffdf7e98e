"""The jobs API in process (FastAPI TestClient) on the real PostgreSQL, with the engine double."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asr_assets.platform.api.app import create_app, jobs_backend
from asr_assets.platform.api.callbacks import SIGNATURE_HEADER, verify
from asr_assets.platform.jobs.models import JobState, JobUsage
from asr_assets.platform.tenancy.settings import PlatformSettings
from tests.support.platform_api import (
    CallbackReceiver,
    FileJobsBackend,
    bootstrap_admin,
    create_tenant,
    pg_url,  # noqa: F401 - fixture
    progress,
)

pytestmark = pytest.mark.integration


@dataclass
class Api:
    client: TestClient
    backend: FileJobsBackend
    admin: str
    a: dict
    b: dict

    def h(self, tenant: dict | str) -> dict[str, str]:
        key = tenant if isinstance(tenant, str) else tenant["api_key"]
        return {"Authorization": f"Bearer {key}"}


def job_body(tenant: str = "team-a", **extra: object) -> dict:
    return {
        "workload": "letter-scoring:1",
        "manifest": f"s3://audio/{tenant}/manifests/day.jsonl",
        "output_prefix": f"s3://audio/{tenant}/out/",
        **extra,
    }


@pytest.fixture
def api(pg_url: str, tmp_path: Path) -> Iterator[Api]:  # noqa: F811
    settings = PlatformSettings(
        database_url=pg_url,
        watch_interval_s=0.2,
        callback_allowed_networks=["127.0.0.1/32"],
        callback_backoff_s=0.05,
        max_body_bytes=16 * 1024,
    )
    admin = bootstrap_admin(pg_url)
    app = create_app(settings)
    backend = FileJobsBackend(tmp_path / "engine")
    app.dependency_overrides[jobs_backend] = lambda: backend
    with TestClient(app) as client:
        a = create_tenant(client, admin, "team-a", max_active_jobs=3, team="reading")
        b = create_tenant(client, admin, "team-b", team="speech")
        yield Api(client, backend, admin, a, b)
    app.state.service.engine.dispose()


def submit(api: Api, tenant: dict, body: dict | None = None, **headers: str):
    return api.client.post(
        "/jobs", json=body or job_body(tenant["tenant"]), headers={**api.h(tenant), **headers}
    )


def test_submit_returns_202_and_the_job_reaches_the_engine_with_tenant_tags(api: Api) -> None:
    response = submit(
        api,
        api.a,
        job_body("team-a", priority="high", params={"beam": "4"}, tags={"project": "pilot"}),
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "QUEUED" and job["tenant"] == "team-a"
    assert response.headers["Location"] == f"/jobs/{job['job_id']}"
    [request] = api.backend.submitted()
    assert request.job_id == job["job_id"]
    assert (request.tenant, request.team, request.priority.value) == ("team-a", "reading", "high")
    assert request.params == {"beam": "4"} and request.tags == {"project": "pilot"}
    # A manifest may name audio anywhere in the tenant's prefixes, and nowhere else.
    assert request.key_prefixes == ["s3://audio/team-a/"]


def test_idempotency_key_replays_the_same_job_and_refuses_another_body(api: Api) -> None:
    first = submit(api, api.a, **{"Idempotency-Key": "k-1"})
    again = submit(api, api.a, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = submit(api, api.a, job_body("team-a", priority="low"), **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    # The same key belongs to each tenant separately.
    assert submit(api, api.b, **{"Idempotency-Key": "k-1"}).status_code == 202
    assert len(api.backend.submitted()) == 2


def test_job_name_is_unique_per_tenant(api: Api) -> None:
    first = submit(api, api.a, job_body("team-a", name="night-1"))
    assert (
        submit(api, api.a, job_body("team-a", name="night-1")).json()["job_id"]
        == (first.json()["job_id"])
    )
    clash = submit(api, api.a, job_body("team-a", name="night-1", priority="high"))
    assert clash.status_code == 409


def test_progress_usage_and_links_follow_the_engine(api: Api) -> None:
    job_id = submit(api, api.a).json()["job_id"]
    progress(api.backend, job_id, state=JobState.IN_PROGRESS, done=752, failed=3, total=1000)
    job = api.client.get(f"/jobs/{job_id}", headers=api.h(api.a)).json()
    assert job["state"] == "IN_PROGRESS"
    assert job["progress"] == {"done": 752, "failed": 3, "total": 1000, "percent": 75.5}
    assert job["links"]["logs"] == f"/jobs/{job_id}/logs"
    usage = JobUsage(files=1000, audio_seconds=7200, cpu_seconds=3600, bytes_out=2_000_000_000)
    progress(
        api.backend,
        job_id,
        state=JobState.COMPLETED,
        done=997,
        failed=3,
        total=1000,
        usage=usage,
        errors={"audio_too_short": 3},
    )
    job = api.client.get(f"/jobs/{job_id}", headers=api.h(api.a)).json()
    assert job["state"] == "COMPLETED" and job["finished_at"]
    assert job["errors_by_reason"] == {"audio_too_short": 3}
    # Default prices: 2 audio-h x 0.30 + 1 CPU-h x 0.05 + 2 GB out x 0.09.
    assert job["usage"]["estimated_cost"] == pytest.approx(0.83)
    logs = api.client.get(f"/jobs/{job_id}/logs", headers=api.h(api.a)).json()
    assert logs["run_id"] == job["run_id"] and logs["lines"]


def test_another_tenants_job_is_404_everywhere(api: Api) -> None:
    job_id = submit(api, api.a).json()["job_id"]
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("GET", f"/jobs/{job_id}/logs"),
    ):
        response = api.client.request(method, path, headers=api.h(api.b))
        assert response.status_code == 404, (method, path)
    assert api.client.get("/jobs", headers=api.h(api.b)).json()["jobs"] == []
    assert api.backend.status(job_id).state == JobState.QUEUED  # not canceled by team-b


@pytest.mark.parametrize(
    "field,value",
    [
        ("manifest", "s3://audio/team-b/manifests/day.jsonl"),  # another tenant's prefix
        ("manifest", "s3://other-bucket/team-a/day.jsonl"),  # another bucket
        ("manifest", "s3://audio/team-a/../team-b/day.jsonl"),  # escape
        ("manifest", "s3://audio/team-a/%2e%2e/team-b/day.jsonl"),  # encoded escape
        ("output_prefix", "s3://audio/team-a-evil/out/"),  # prefix lookalike
        ("output_prefix", "file:///etc/"),
        ("output_prefix", "s3://audio/team-a//x/"),
        ("manifest", "/etc/passwd"),
    ],
)
def test_prefixes_outside_the_tenants_are_403_before_anything_runs(
    api: Api, field: str, value: str
) -> None:
    response = submit(api, api.a, job_body("team-a", **{field: value}))
    assert response.status_code == 403, response.text
    assert api.backend.submitted() == []


@pytest.mark.parametrize(
    "key",
    [
        "",
        "nonsense",
        "asrk_0000000000000000_forged",
        "Basic dXNlcjpwYXNz",
        "asrk_\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00_x",
    ],
)
def test_missing_or_forged_keys_are_401(api: Api, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    assert api.client.post("/jobs", json=job_body(), headers=headers).status_code == 401
    assert api.client.get("/jobs", headers=headers).status_code == 401
    assert api.backend.submitted() == []


def test_a_key_with_a_valid_id_but_wrong_secret_is_401(api: Api) -> None:
    forged = api.a["api_key"][:-4] + "AAAA"
    assert api.client.get("/jobs", headers=api.h(forged)).status_code == 401


def test_revoked_key_is_401_and_rotation_keeps_the_tenant_working(api: Api) -> None:
    admin = {"Authorization": f"Bearer {api.admin}"}
    new = api.client.post("/tenants/team-a/keys", headers=admin).json()
    assert api.client.post(f"/keys/{api.a['key_id']}/revoke", headers=admin).status_code == 204
    assert api.client.get("/jobs", headers=api.h(api.a)).status_code == 401
    assert api.client.get("/jobs", headers=api.h(new["api_key"])).status_code == 200
    # Only admins manage keys.
    assert api.client.post("/tenants/team-b/keys", headers=api.h(api.b)).status_code == 403


def test_malformed_and_oversized_bodies_are_4xx_and_launch_nothing(api: Api) -> None:
    h = {**api.h(api.a), "Content-Type": "application/json"}
    assert api.client.post("/jobs", content=b"{not json", headers=h).status_code == 422
    assert api.client.post("/jobs", json=[1, 2], headers=api.h(api.a)).status_code == 422
    both = job_body("team-a", input_prefix="s3://audio/team-a/in/")
    assert submit(api, api.a, both).status_code == 422
    assert submit(api, api.a, job_body("team-a", extra_field=1)).status_code == 422
    assert submit(api, api.a, job_body("team-a", tags={"asr/tenant": "team-b"})).status_code == 422
    assert submit(api, api.a, job_body("team-a", workload="../../bin/sh")).status_code == 422
    big = job_body(
        "team-a",
        tags={f"k{i}": "x" * 250 for i in range(49)},
        params={f"p{i}": "y" * 250 for i in range(49)},
    )
    assert submit(api, api.a, big).status_code == 413
    assert api.backend.submitted() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2/hook",  # loopback, not in the allowed network
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost.:9/x",
        "ftp://example.com/x",
        "http://user:pw@8.8.8.8/x",
    ],
)
def test_callback_urls_to_private_addresses_are_refused(api: Api, url: str) -> None:
    response = submit(api, api.a, job_body("team-a", callback_url=url))
    assert response.status_code == 422, (url, response.text)
    assert api.backend.submitted() == []


def test_active_job_quota_is_429_with_retry_after(api: Api) -> None:
    ids = [submit(api, api.a).json()["job_id"] for _ in range(3)]
    refused = submit(api, api.a)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert len(api.backend.submitted()) == 3
    progress(api.backend, ids[0], state=JobState.COMPLETED, done=1, total=1)
    api.client.get(f"/jobs/{ids[0]}", headers=api.h(api.a))
    assert submit(api, api.a).status_code == 202
    # Another tenant is not affected.
    assert submit(api, api.b).status_code == 202


def test_files_per_job_and_audio_hours_per_day_quotas(api: Api) -> None:
    c = create_tenant(
        api.client, api.admin, "team-c", max_files_per_job=10, audio_hours_per_day=1.0
    )
    (api.backend.root / "input-files").write_text("11")
    too_many = submit(api, c, job_body("team-c"))
    assert too_many.status_code == 429 and "files per job" in too_many.json()["detail"]
    (api.backend.root / "input-files").write_text("10")
    job_id = submit(api, c, job_body("team-c")).json()["job_id"]
    progress(
        api.backend,
        job_id,
        state=JobState.COMPLETED,
        done=10,
        total=10,
        usage=JobUsage(files=10, audio_seconds=3700),
    )
    api.client.get(f"/jobs/{job_id}", headers=api.h(c))
    over = submit(api, c, job_body("team-c"))
    assert over.status_code == 429
    now = datetime.now(UTC)
    to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert abs(int(over.headers["Retry-After"]) - to_midnight) < 5


def test_a_request_the_engine_refuses_is_422_and_leaves_no_job_behind(api: Api) -> None:
    (api.backend.root / "engine-refuses").write_text("")
    response = submit(api, api.a, **{"Idempotency-Key": "refused-1"})
    assert response.status_code == 422, response.text
    assert "no workload named" in response.json()["detail"]
    assert "Retry-After" not in response.headers
    assert api.client.get("/jobs", headers=api.h(api.a)).json()["jobs"] == []
    (api.backend.root / "engine-refuses").unlink()
    assert submit(api, api.a, **{"Idempotency-Key": "refused-1"}).status_code == 202


def test_engine_down_is_503_and_leaves_no_job_behind(api: Api) -> None:
    (api.backend.root / "engine-down").write_text("")
    response = submit(api, api.a, **{"Idempotency-Key": "down-1"})
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert api.client.get("/jobs", headers=api.h(api.a)).json()["jobs"] == []
    assert api.client.get("/readyz").status_code == 503
    (api.backend.root / "engine-down").unlink()
    assert submit(api, api.a, **{"Idempotency-Key": "down-1"}).status_code == 202
    ready = api.client.get("/readyz").json()
    assert ready == {
        "ready": True,
        "checks": {"database": {"ok": True, "detail": ""}, "dagster": {"ok": True, "detail": ""}},
    }


def test_cancel(api: Api) -> None:
    job_id = submit(api, api.a).json()["job_id"]
    response = api.client.post(f"/jobs/{job_id}/cancel", headers=api.h(api.a))
    assert response.status_code == 200 and response.json()["state"] == "CANCELED"
    listed = api.client.get("/jobs?status=CANCELED", headers=api.h(api.a)).json()["jobs"]
    assert [j["job_id"] for j in listed] == [job_id]


def test_list_filters_and_cursor_pagination(api: Api) -> None:
    admin = {"Authorization": f"Bearer {api.admin}"}
    api.client.post(
        "/tenants",
        headers=admin,
        json={"name": "team-d", "allowed_prefixes": ["s3://audio/team-d/"], "max_active_jobs": 50},
    )
    d_key = api.client.post("/tenants/team-d/keys", headers=admin).json()["api_key"]
    d = {"tenant": "team-d", "api_key": d_key}
    ids = [
        submit(api, d, job_body("team-d", workload=w)).json()["job_id"]
        for w in ["letter-scoring:1", "transcribe:1"] * 4
    ]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/jobs", params=params, headers=api.h(d)).json()
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    transcribe = api.client.get("/jobs?workload=transcribe:1", headers=api.h(d)).json()["jobs"]
    assert {j["workload"] for j in transcribe} == {"transcribe:1"} and len(transcribe) == 4
    assert api.client.get("/jobs?cursor=%%%", headers=api.h(d)).status_code == 422
    assert api.client.get("/jobs?cursor=bm90aGluZw", headers=api.h(d)).status_code == 400


def test_usage_grouped_by_team_workload_and_day(api: Api) -> None:
    for tenant, workload, audio in (
        ("team-a", "letter-scoring:1", 3600),
        ("team-b", "transcribe:1", 1800),
        ("team-b", "letter-scoring:1", 900),
    ):
        key = api.a if tenant == "team-a" else api.b
        job_id = submit(api, key, job_body(tenant, workload=workload)).json()["job_id"]
        progress(
            api.backend,
            job_id,
            state=JobState.COMPLETED,
            done=1,
            total=1,
            usage=JobUsage(files=1, audio_seconds=audio),
        )
        api.client.get(f"/jobs/{job_id}", headers=api.h(key))
    admin = {"Authorization": f"Bearer {api.admin}"}
    by_team = api.client.get("/usage?group_by=team", headers=admin).json()["rows"]
    assert {r["group"]: r["audio_seconds"] for r in by_team} == {"reading": 3600, "speech": 2700}
    by_workload = api.client.get("/usage?group_by=workload&tenant=team-b", headers=admin).json()
    assert {r["group"]: r["jobs"] for r in by_workload["rows"]} == {
        "letter-scoring:1": 1,
        "transcribe:1": 1,
    }
    today = datetime.now(UTC).date().isoformat()
    own = api.client.get(f"/usage?from={today}&to={today}", headers=api.h(api.b)).json()
    assert own["tenant"] == "team-b" and own["rows"][0]["group"] == today
    assert own["rows"][0]["estimated_cost"] == pytest.approx(2700 / 3600 * 0.30)
    assert api.client.get("/usage?tenant=team-a", headers=api.h(api.b)).status_code == 403


def test_completion_callback_is_signed_and_retried(api: Api) -> None:
    with CallbackReceiver(fail_first=2) as receiver:
        response = submit(api, api.a, job_body("team-a", callback_url=receiver.url))
        job_id = response.json()["job_id"]
        progress(api.backend, job_id, state=JobState.COMPLETED, done=5, total=5)
        deadline = time.monotonic() + 15
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)  # the watcher notices the finished job on its own
        assert receiver.attempts == 3
        [(headers, body)] = receiver.received
    assert verify(api.a["callback_secret"], headers[SIGNATURE_HEADER], body)
    assert not verify(api.b["callback_secret"], headers[SIGNATURE_HEADER], body)
    assert json.loads(body)["job_id"] == job_id and json.loads(body)["state"] == "COMPLETED"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        job = api.client.get(f"/jobs/{job_id}", headers=api.h(api.a)).json()
        if job["callback"] == "delivered":
            break
        time.sleep(0.1)
    assert job["callback"] == "delivered"


def test_workloads_and_health(api: Api) -> None:
    names = [w["name"] for w in api.client.get("/workloads", headers=api.h(api.a)).json()]
    assert names == ["letter-scoring", "transcribe"]
    assert api.client.get("/healthz").json() == {"ok": True}


def test_status_page_for_a_browser_and_its_signed_link(api: Api) -> None:
    job_id = submit(api, api.a, job_body("team-a", name="pilot-<b>")).json()
    assert job_id.get("detail")  # names are restricted: no markup gets in
    job = submit(api, api.a).json()
    progress(
        api.backend,
        job["job_id"],
        state=JobState.IN_PROGRESS,
        done=40,
        failed=10,
        total=200,
        errors={"decode_failed": 10},
    )
    page = api.client.get(f"/jobs/{job['job_id']}", headers={**api.h(api.a), "Accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "25.0%" in page.text and "decode_failed" in page.text
    link = api.client.get(f"/jobs/{job['job_id']}", headers=api.h(api.a)).json()["links"]["page"]
    assert api.client.get(link).status_code == 200
    tampered = link.replace("signature=", "signature=0")
    assert api.client.get(tampered).status_code == 401
    assert api.client.get(f"/jobs/{job['job_id']}").status_code == 401


def test_engine_unreachable_on_read_serves_the_last_state_seen(api: Api) -> None:
    job_id = submit(api, api.a).json()["job_id"]
    progress(api.backend, job_id, state=JobState.IN_PROGRESS, done=1, total=2)
    assert api.client.get(f"/jobs/{job_id}", headers=api.h(api.a)).json()["state"] == (
        "IN_PROGRESS"
    )
    (api.backend.root / f"{job_id}.json").unlink()  # the engine no longer answers for it
    response = api.client.get(f"/jobs/{job_id}", headers=api.h(api.a))
    assert response.status_code == 200 and response.json()["state"] == "IN_PROGRESS"
    assert api.client.get("/jobs", headers=api.h(api.a)).status_code == 200


def test_a_launch_lost_in_a_crash_is_failed_and_frees_its_quota_slot(api: Api) -> None:
    from datetime import timedelta

    from asr_assets.platform.tenancy.models import JobRecord

    service = api.client.app.state.service
    # Recent: the background watcher leaves them alone (it waits two minutes); reaped below.
    old = datetime.now(UTC) - timedelta(seconds=1)
    with service.sessions.begin() as session:
        for i in range(3):  # team-a's quota is 3 active jobs
            session.add(
                JobRecord(
                    job_id=f"job-lost-{i}",
                    tenant="team-a",
                    idempotency_key=f"lost-{i}",
                    request_hash="x",
                    request=job_body(),
                    workload="letter-scoring:1",
                    priority="normal",
                    state="SUBMITTING",
                    created_at=old,
                    updated_at=old,
                    callback_state="none",
                    callback_attempts=0,
                )
            )
    assert submit(api, api.a).status_code == 429
    assert service.reap_unconfirmed_launches(older_than_s=0) == 3
    job = api.client.get("/jobs/job-lost-0", headers=api.h(api.a)).json()
    assert job["state"] == "FAILED" and job["failure_reason"] == "launch_unconfirmed"
    assert submit(api, api.a).status_code == 202
