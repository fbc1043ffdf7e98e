"""Jobs API under load: 20 tenants submitting and polling at once against one uvicorn server.

The server is the real API on PostgreSQL (127.0.0.1:5432, a scratch schema; SQLite when no
server answers) with the engine double from the tests: this measures the API, its database and
its quota/idempotency logic, not job execution. Bounded: a fixed number of rounds per tenant.

Reports p50/p99 latency of POST /jobs and GET /jobs/{id}, with GET /healthz as the server's floor
in the same run, and checks under load that
- no tenant ever had more jobs running in the engine than its active-job quota, and
- every replayed Idempotency-Key returned the job its first use created (one job per key).

python -m bench platform_api            # or: python -m bench.platform_api --tenants 20 --rounds 12
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("ASR_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
QUOTA = 5


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def _database(tmp: Path) -> tuple[str, Callable[[], None]]:
    try:
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception:  # noqa: BLE001 - no PostgreSQL here: fall back to the embedded database
        return f"sqlite:///{tmp / 'platform.db'}", lambda: None

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{PG}?options=-csearch_path%3D{schema}", drop


class Engine(threading.Thread):
    """Finishes queued jobs at random, and records the most jobs any tenant had unfinished."""

    def __init__(self, backend) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.backend = backend
        self.stop = threading.Event()
        self.max_active: dict[str, int] = defaultdict(int)

    def run(self) -> None:
        from asr_assets.platform.jobs.models import JobState, JobStatus

        rng = random.Random(14)
        while not self.stop.wait(0.05):
            active: dict[str, int] = defaultdict(int)
            for path in self.backend.root.glob("job-*[0-9a-f].json"):
                try:
                    status = JobStatus.model_validate_json(path.read_text())
                except ValueError:
                    continue
                if status.state not in {JobState.QUEUED, JobState.IN_PROGRESS}:
                    continue
                if rng.random() < 0.005:
                    done = status.model_copy(update={"state": JobState.COMPLETED})
                    self.backend.write(done)
                else:
                    active[status.tenant] += 1
            for tenant, count in active.items():
                self.max_active[tenant] = max(self.max_active[tenant], count)


async def _tenant(
    client: httpx.AsyncClient, key: str, name: str, rounds: int, out: dict[str, list]
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    first_job: dict[str, str] = {}
    for round_ in range(rounds):
        # Every third submission retries an earlier key: it must come back as the same job.
        idem = f"{name}-{round_ - 2}" if round_ % 3 == 2 and round_ >= 2 else f"{name}-{round_}"
        body = {
            "workload": "transcribe:1",
            "input_prefix": f"s3://audio/{name}/in/{idem}/",
            "output_prefix": f"s3://audio/{name}/out/{idem}/",
        }
        started = time.perf_counter()
        response = await client.post(
            "/jobs", json=body, headers={**headers, "Idempotency-Key": idem}
        )
        out["post"].append(time.perf_counter() - started)
        out[f"post_{response.status_code}"].append(1)
        if response.status_code == 202:
            job_id = response.json()["job_id"]
            if idem in first_job:
                out["replays"].append(1)
                if first_job[idem] != job_id:
                    out["replay_mismatch"].append(idem)
            first_job.setdefault(idem, job_id)
            for _ in range(3):
                started = time.perf_counter()
                got = await client.get(f"/jobs/{job_id}", headers=headers)
                out["get"].append(time.perf_counter() - started)
                out[f"get_{got.status_code}"].append(1)
        started = time.perf_counter()
        await client.get("/healthz")
        out["healthz"].append(time.perf_counter() - started)
    out["keys"].extend(first_job.values())


async def _load(url: str, keys: dict[str, str], rounds: int) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    limits = httpx.Limits(max_connections=len(keys) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(
            *(_tenant(client, key, name, rounds, out) for name, key in keys.items())
        )
    return out


def run(tenants: int, rounds: int) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.support.platform_api import (
        FileJobsBackend,
        bootstrap_admin,
        server_command,
        write_settings,
    )
    from tests.support.processes import free_port, running

    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp_name:
        tmp = Path(tmp_name)
        database_url, drop = _database(tmp)
        try:
            admin_key = bootstrap_admin(database_url)
            backend = FileJobsBackend(tmp / "engine")
            config = write_settings(tmp / "platform.yaml", database_url, watch_interval_s=0.2)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "ASR_PLATFORM_CONFIG": str(config),
                "ASR_TEST_ENGINE_DIR": str(backend.root),
                "PYTHONPATH": str(ROOT),
            }

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            with running(server_command(port), env=env, ready=ready, timeout_s=60):
                keys = {}
                for i in range(tenants):
                    name = f"tenant-{i:02d}"
                    created = httpx.post(
                        f"{url}/tenants",
                        headers={"Authorization": f"Bearer {admin_key}"},
                        json={
                            "name": name,
                            "allowed_prefixes": [f"s3://audio/{name}/"],
                            "max_active_jobs": QUOTA,
                        },
                        timeout=10,
                    ).json()
                    keys[name] = created["api_key"]
                engine = Engine(backend)
                engine.start()
                started = time.perf_counter()
                out = asyncio.run(_load(url, keys, rounds))
                wall = time.perf_counter() - started
                engine.stop.set()
                engine.join()
        finally:
            drop()
    requests = len(out["post"]) + len(out["get"]) + len(out["healthz"])
    database = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(
        f"{tenants} tenants x {rounds} rounds on {database}: {requests} requests in {wall:.1f} s"
        f" ({requests / wall:.0f} req/s)"
    )
    floor = statistics.median(out["healthz"]) * 1000
    for name in ("post", "get", "healthz"):
        p50, p99 = _percentile(out[name], 0.5), _percentile(out[name], 0.99)
        print(
            f"  {name:<8} n={len(out[name]):<5} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
            f"  (p50 = {p50 / floor:.1f}x healthz)"
        )
    statuses = {k: len(v) for k, v in sorted(out.items()) if k.startswith(("post_", "get_"))}
    print(f"  responses: {statuses}")
    worst = max(engine.max_active.values(), default=0)
    print(f"  most unfinished jobs of one tenant in the engine: {worst} (quota {QUOTA})")
    print(f"  idempotent replays: {len(out['replays'])}, mismatched: {len(out['replay_mismatch'])}")
    unique_keys = len(set(out["keys"]))
    ok = (
        worst <= QUOTA
        and not out["replay_mismatch"]
        and not any(k.startswith(("post_5", "get_5")) for k in statuses)
    )
    print(f"  distinct jobs behind accepted keys: {unique_keys}; invariants hold: {ok}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=12)
    args, _ = parser.parse_known_args(sys.argv[2:] if sys.argv[1:2] == ["platform_api"] else None)
    if run(args.tenants, args.rounds):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
