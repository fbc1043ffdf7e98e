"""The jobs API as deployed: uvicorn on a free 127.0.0.1 port, real PostgreSQL, the engine double.

Drives it the way its users do: the `asr-platform` CLI, generated requests from the OpenAPI
document (schemathesis: no 5xx), and a headless Chromium on the status page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from asr_assets.platform.jobs.models import JobState, JobUsage
from tests.support.platform_api import (
    RunningApi,
    api_server,  # noqa: F401 - fixture
    create_tenant,
    pg_url,  # noqa: F401 - fixture
    progress,
)
from tests.support.processes import free_port, running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(api: RunningApi, key: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ASR_PLATFORM_URL": api.url,
        "ASR_PLATFORM_KEY": key,
        "ASR_PLATFORM_CLIENT_CONFIG": "/nonexistent",
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "100",
    }
    result = subprocess.run(
        [sys.executable, "-m", "asr_assets.platform.platform_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_cli_from_submit_to_a_finished_job(api_server: RunningApi) -> None:  # noqa: F811
    api = api_server
    key = create_tenant(api, api.admin_key, "team-a")["api_key"]

    def engine() -> None:
        """Plays the engine: waits for the job, then runs it to the end in steps."""
        # Generous: the CLI's start (imports) on a loaded 2-core machine can take tens of seconds.
        deadline = time.monotonic() + 240
        while not api.backend.submitted() and time.monotonic() < deadline:
            time.sleep(0.05)
        [request] = api.backend.submitted()
        job_id = request.job_id
        for done in (0, 40, 80, 100):
            progress(api.backend, job_id, state=JobState.IN_PROGRESS, done=done, total=100)
            time.sleep(0.3)
        progress(
            api.backend,
            job_id,
            state=JobState.COMPLETED,
            done=100,
            total=100,
            usage=JobUsage(files=100, audio_seconds=600, cpu_seconds=120),
        )

    thread = threading.Thread(target=engine, daemon=True)
    thread.start()
    result = cli(
        api,
        key,
        "--json",
        "submit",
        "--workload",
        "letter-scoring:1",
        "--input",
        "s3://audio/team-a/in/",
        "--output",
        "s3://audio/team-a/out/",
        "--priority",
        "high",
        "--param",
        "beam=4",
        "--wait",
        "--poll",
        "0.2",
    )
    thread.join(timeout=60)
    job = json.loads(result.stdout)
    assert job["state"] == "COMPLETED" and job["progress"]["percent"] == 100.0
    [request] = api.backend.submitted()
    assert request.priority.value == "high" and request.params == {"beam": "4"}
    assert request.job_id == job["job_id"]

    # Without --json: the live progress bar path, ending on the job's line.
    api.backend.root.joinpath("input-files").write_text("1")
    quiet = cli(
        api,
        key,
        "submit",
        "--workload",
        "transcribe:1",
        "--input",
        "s3://audio/team-a/in2/",
        "--output",
        "s3://audio/team-a/out2/",
        "--name",
        "n2",
    )
    assert quiet.stdout.startswith("submitted job-")
    second = quiet.stdout.split()[1]
    progress(
        api.backend,
        second,
        state=JobState.FAILED,
        done=0,
        failed=1,
        total=1,
        failure_reason="workload exited 3",
    )
    waited = cli(
        api,
        key,
        "submit",
        "--workload",
        "transcribe:1",
        "--input",
        "s3://audio/team-a/in2/",
        "--output",
        "s3://audio/team-a/out2/",
        "--name",
        "n2",
        "--wait",
        check=False,
    )
    assert waited.returncode == 1 and "FAILED" in waited.stdout
    assert "workload exited 3" in waited.stdout

    status = cli(api, key, "status", job["job_id"]).stdout
    assert job["job_id"] in status and "COMPLETED" in status and "100.0%" in status
    assert job["job_id"] in cli(api, key, "list", "--status", "COMPLETED").stdout
    assert "run-" in cli(api, key, "logs", job["job_id"]).stdout
    assert "letter-scoring:1.1.0" in cli(api, key, "workloads").stdout
    usage = json.loads(cli(api, key, "--json", "usage", "--group-by", "workload").stdout)
    assert usage["rows"][0]["group"] == "letter-scoring:1"
    assert usage["rows"][0]["audio_seconds"] == 600


def test_cli_errors_are_one_clear_line(api_server: RunningApi) -> None:  # noqa: F811
    api = api_server
    key = create_tenant(api, api.admin_key, "team-a")["api_key"]
    cases = [
        (key, ["status", "job-nope"], "404 no such job"),
        ("asrk_0000000000000000_x", ["list"], "401 invalid or revoked API key"),
        (
            key,
            [
                "submit",
                "--workload",
                "letter-scoring:1",
                "--input",
                "s3://audio/team-b/in/",
                "--output",
                "s3://audio/team-a/out/",
            ],
            "403 input_prefix is outside",
        ),
        (
            key,
            [
                "submit",
                "--workload",
                "letter-scoring:1",
                "--input",
                "s3://audio/team-a/in/",
                "--output",
                "s3://audio/team-a/out/",
                "--callback-url",
                "http://10.0.0.1/h",
            ],
            "422 callback_url resolves to a non-public address",
        ),
    ]
    for api_key, args, expected in cases:
        result = cli(api, api_key, *args, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and expected in lines[0], result.stderr
    down = subprocess.run(
        [
            sys.executable,
            "-m",
            "asr_assets.platform.platform_cli",
            "--url",
            "http://127.0.0.1:9",
            "--key",
            key,
            "list",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "cannot reach http://127.0.0.1:9" in down.stderr


def test_serve_starts_the_api_and_readyz_reports_the_engine(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "platform.yaml"
    config.write_text(json.dumps({"database_url": pg_url}))
    port = free_port()
    env = {**os.environ, "ASR_PLATFORM_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    env.pop("DAGSTER_HOME", None)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    command = [
        sys.executable,
        "-m",
        "asr_assets.platform.platform_cli",
        "serve",
        "--port",
        str(port),
    ]
    with running(command, env=env, ready=ready, timeout_s=60, log_path=tmp_path / "serve.log"):
        readiness = httpx.get(f"{url}/readyz", timeout=10)
    assert readiness.status_code == 503
    checks = readiness.json()["checks"]
    assert checks["database"]["ok"] and not checks["dagster"]["ok"]
    assert "DAGSTER_HOME" in checks["dagster"]["detail"]


def test_schemathesis_finds_no_server_error(api_server: RunningApi, tmp_path: Path) -> None:  # noqa: F811
    api = api_server
    tenant = create_tenant(api, api.admin_key, "team-a")
    # A job to find, so that generated requests also reach existing resources.
    job = httpx.post(
        f"{api.url}/jobs",
        headers={"Authorization": f"Bearer {tenant['api_key']}"},
        json={
            "workload": "transcribe:1",
            "input_prefix": "s3://audio/team-a/in/",
            "output_prefix": "s3://audio/team-a/out/",
        },
        timeout=10,
    )
    assert job.status_code == 202
    # The admin key reaches every operation (the admin is also a tenant with its own prefixes).
    key = api.admin_key
    result = subprocess.run(
        [
            shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "-H",
            f"Authorization: Bearer {key}",
            "--max-examples",
            "12",
            "--seed",
            "14",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-time",
            "25",
            "--request-timeout",
            "10",
            "--no-shrink",
            "--warnings",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + api.log_path.read_text()[-3000:]
    assert "No issues found" in result.stdout, result.stdout[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) >= 100, result.stdout[-2000:]


def test_status_page_in_headless_chromium(api_server: RunningApi, tmp_path: Path) -> None:  # noqa: F811
    api = api_server
    tenant = create_tenant(api, api.admin_key, "team-a")
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    body = {
        "workload": "letter-scoring:1",
        "manifest": "s3://audio/team-a/m/2026-11-27.jsonl",
        "output_prefix": "s3://audio/team-a/out/2026-11-27/",
        "name": "reading-check-nov-27",
    }
    job = httpx.post(f"{api.url}/jobs", json=body, headers=headers, timeout=10).json()
    progress(
        api.backend,
        job["job_id"],
        state=JobState.IN_PROGRESS,
        done=752,
        failed=23,
        total=1000,
        errors={"audio_too_short": 15, "decode_failed": 8},
        usage=JobUsage(files=775, audio_seconds=5400, cpu_seconds=1800),
    )
    link = httpx.get(f"{api.url}/jobs/{job['job_id']}", headers=headers, timeout=10).json()
    page_url = api.url + link["links"]["page"]
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'p'}",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page_url],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    assert 'aria-valuenow="77.5"' in dom and "752 of 1000 files done" in dom
    assert "23 failed" in dom and "audio_too_short" in dom and "IN_PROGRESS" in dom
    listing = httpx.get(f"{api.url}/jobs", headers=headers, timeout=10).json()["page"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", api.url + listing],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    assert "Jobs of team-a" in dom and "reading-check-nov-27" in dom and "77.5%" in dom
    shot = tmp_path / "job-page.png"
    subprocess.run(
        [
            chromium,
            *flags,
            "--window-size=1100,1000",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            page_url,
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )
    assert shot.stat().st_size > 10_000
    if os.environ.get("ASR_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "job-status-page.png")


def test_a_chunked_body_over_the_limit_is_413(api_server: RunningApi) -> None:  # noqa: F811
    api = api_server
    key = create_tenant(api, api.admin_key, "team-a")["api_key"]

    def chunks():  # no Content-Length: the server must count as it reads
        yield b'{"workload": "letter-scoring:1", "name": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    response = httpx.post(
        f"{api.url}/jobs",
        content=chunks(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413, response.text
    assert api.backend.submitted() == []
