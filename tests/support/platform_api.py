"""Fixtures for the jobs API tests: a scratch PostgreSQL schema, a job engine double, a server.

The engine double stands in for the platform core only in these tests: it keeps each job's status
as a JSON file, so a test (or a server in another process) can move a job along by writing it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from asr_assets.platform.api.backend import WorkloadInfo
from asr_assets.platform.jobs.models import (
    JobProgress,
    JobRequest,
    JobResults,
    JobState,
    JobStatus,
    JobUsage,
)
from tests.support.processes import free_port, running

PG_BASE = os.environ.get(
    "ASR_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database URL on the real PostgreSQL whose search_path is a fresh schema, dropped after."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class FileJobsBackend:
    """Job engine double: statuses in `<root>/<job_id>.json`, requests in `<job_id>.request.json`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fail_submit = False
        self.input_files: int | None = 3

    def _path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def submit(self, request: JobRequest) -> str:
        if self.fail_submit or (self.root / "engine-down").exists():
            raise RuntimeError("engine down")
        if (self.root / "engine-refuses").exists():
            # What the core raises for a request it will never run (e.g. an unknown workload).
            raise LookupError("no workload named 'letter-scoring'")
        assert request.job_id is not None
        (self.root / f"{request.job_id}.request.json").write_text(request.model_dump_json())
        self.write(
            JobStatus(
                job_id=request.job_id,
                state=JobState.QUEUED,
                workload=request.workload,
                tenant=request.tenant,
                created_at=datetime.now(UTC),
                tags=request.tags,
            )
        )
        return request.job_id

    def write(self, status: JobStatus) -> None:
        path = self._path(status.job_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(status.model_dump_json())
        tmp.replace(path)

    def submitted(self) -> list[JobRequest]:
        return [
            JobRequest.model_validate_json(p.read_text())
            for p in sorted(self.root.glob("*.request.json"))
        ]

    def status(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate_json(self._path(job_id).read_text())

    def cancel(self, job_id: str) -> JobStatus:
        status = self.status(job_id)
        if status.state in {JobState.QUEUED, JobState.IN_PROGRESS}:
            status = status.model_copy(
                update={"state": JobState.CANCELED, "finished_at": datetime.now(UTC)}
            )
            self.write(status)
        return status

    def results(self, job_id: str) -> JobResults:
        status = self.status(job_id)
        return JobResults(job_id=job_id, state=status.state)

    def logs(self, job_id: str, run_id: str | None) -> list[str]:
        return [f"run {run_id} of {job_id}: started"] if run_id else []

    def workloads(self) -> list[WorkloadInfo]:
        return [
            WorkloadInfo(
                name="letter-scoring",
                version="1.1.0",
                ref="letter-scoring:1.1.0",
                owner="reading",
                input_kinds=["manifest"],
            ),
            WorkloadInfo(
                name="transcribe",
                version="1.0.0",
                ref="transcribe:1.0.0",
                owner="platform",
                input_kinds=["prefix", "manifest"],
            ),
        ]

    def count_inputs(self, request: JobRequest, limit: int) -> int | None:
        marker = self.root / "input-files"
        return int(marker.read_text()) if marker.exists() else self.input_files

    def check_ready(self) -> None:
        if (self.root / "engine-down").exists():
            raise RuntimeError("engine down")


def progress(
    backend: FileJobsBackend,
    job_id: str,
    *,
    state: JobState,
    done: int = 0,
    failed: int = 0,
    total: int = 0,
    usage: JobUsage | None = None,
    errors: dict[str, int] | None = None,
    failure_reason: str | None = None,
) -> JobStatus:
    """Move a job along in the double, as the engine would."""
    current = backend.status(job_id)
    now = datetime.now(UTC)
    finished = state in {JobState.COMPLETED, JobState.FAILED, JobState.CANCELED}
    status = current.model_copy(
        update={
            "state": state,
            "progress": JobProgress(done=done, failed=failed, total=total),
            "usage": usage or current.usage,
            "errors_by_reason": errors or {},
            "failure_reason": failure_reason,
            "started_at": current.started_at or now,
            "finished_at": now if finished else None,
            "run_id": current.run_id or f"run-{job_id[-6:]}",
            "results_prefix": "s3://audio/team-a/out/" if state == JobState.COMPLETED else None,
        }
    )
    backend.write(status)
    return status


@dataclass
class CallbackReceiver:
    """An HTTP server on 127.0.0.1 that records callback deliveries (failing the first N)."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""

    def __enter__(self) -> CallbackReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(503)
                else:
                    receiver.received.append((dict(self.headers.items()), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class RunningApi:
    url: str
    backend: FileJobsBackend
    admin_key: str
    log_path: Path


def write_settings(path: Path, database_url: str, **extra: object) -> Path:
    settings = {
        "database_url": database_url,
        "watch_interval_s": 0.3,
        "callback_allowed_networks": ["127.0.0.1/32"],
        "callback_backoff_s": 0.05,
        **extra,
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def bootstrap_admin(database_url: str) -> str:
    from asr_assets.platform.tenancy import auth
    from asr_assets.platform.tenancy.database import make_engine, migrate, sessions
    from asr_assets.platform.tenancy.settings import Quotas

    engine = make_engine(database_url)
    migrate(engine)
    with sessions(engine).begin() as session:
        _, key = auth.create_tenant(
            session, "ops", allowed_prefixes=["s3://ops/"], quotas=Quotas(), is_admin=True
        )
    engine.dispose()
    return key.token


@pytest.fixture
def api_server(pg_url: str, tmp_path: Path) -> Iterator[RunningApi]:
    """The jobs API under uvicorn on a free 127.0.0.1 port, on PostgreSQL, with the double."""
    backend_dir = tmp_path / "engine"
    backend = FileJobsBackend(backend_dir)
    config = write_settings(tmp_path / "platform.yaml", pg_url)
    admin_key = bootstrap_admin(pg_url)
    port = free_port()
    env = {
        **os.environ,
        "ASR_PLATFORM_CONFIG": str(config),
        "ASR_TEST_ENGINE_DIR": str(backend_dir),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    log_path = tmp_path / "server.log"
    with running(server_command(port), env=env, ready=ready, timeout_s=60, log_path=log_path):
        yield RunningApi(url=url, backend=backend, admin_key=admin_key, log_path=log_path)


def create_tenant(
    api: RunningApi | httpx.Client, admin_key: str, name: str, **body: object
) -> dict:
    payload = {"name": name, "allowed_prefixes": [f"s3://audio/{name}/"], **body}
    headers = {"Authorization": f"Bearer {admin_key}"}
    if isinstance(api, RunningApi):
        response = httpx.post(f"{api.url}/tenants", json=payload, headers=headers, timeout=10)
    else:
        response = api.post("/tenants", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def server_command(port: int) -> list[str]:
    """uvicorn serving the test app (real service, engine double) on 127.0.0.1:`port`."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tests.support.platform_server:build_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
