"""The narrow boundary between the HTTP service and the job engine.

`JobsBackend` is all the API needs from the platform core; `PlatformJobsBackend` implements it
with the core's Python API (`asr_assets.platform.jobs`), imported lazily so that importing the
service loads neither Dagster nor the engine until a request needs them.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Protocol

import yaml
from pydantic import BaseModel

from asr_assets.observability.logging import get_logger
from asr_assets.platform.jobs.models import JobRequest, JobResults, JobStatus

log = get_logger(__name__)
WORKLOADS_DIR = Path(__file__).resolve().parents[3] / "workloads"


class WorkloadInfo(BaseModel):
    name: str
    version: str
    description: str = ""
    owner: str = ""
    input_kind: str = ""


class JobsBackend(Protocol):
    def submit(self, request: JobRequest) -> str: ...

    def status(self, job_id: str) -> JobStatus: ...

    def cancel(self, job_id: str) -> JobStatus: ...

    def results(self, job_id: str) -> JobResults: ...

    def logs(self, job_id: str, run_id: str | None) -> list[str]: ...

    def workloads(self) -> list[WorkloadInfo]: ...

    def count_inputs(self, request: JobRequest, limit: int) -> int | None:
        """Files the job would read, counting at most `limit + 1`; None when unknown."""
        ...

    def check_ready(self) -> None:
        """Raise when the engine (the Dagster instance) cannot take jobs."""
        ...


class PlatformJobsBackend:
    """The real engine: the platform core's jobs API on the Dagster instance in DAGSTER_HOME."""

    def submit(self, request: JobRequest) -> str:
        from asr_assets.platform.jobs import submit

        return submit(request)

    def status(self, job_id: str) -> JobStatus:
        from asr_assets.platform.jobs import status

        return status(job_id)

    def cancel(self, job_id: str) -> JobStatus:
        from asr_assets.platform.jobs import cancel

        return cancel(job_id)

    def results(self, job_id: str) -> JobResults:
        from asr_assets.platform.jobs import results

        return results(job_id)

    def _instance(self):  # type: ignore[no-untyped-def]
        import dagster as dg

        if os.environ.get("DAGSTER_HOME"):
            return dg.DagsterInstance.get()
        raise RuntimeError("DAGSTER_HOME is not set: the service needs a persistent instance")

    def logs(self, job_id: str, run_id: str | None) -> list[str]:
        if run_id is None:
            return []
        lines = []
        for entry in self._instance().all_logs(run_id):
            moment = entry.timestamp
            level = (
                logging.getLevelName(entry.level) if isinstance(entry.level, int) else entry.level
            )
            lines.append(f"{moment:.3f} {level} {entry.step_key or '-'} {entry.user_message}")
        return lines

    def workloads(self) -> list[WorkloadInfo]:
        """The shipped workload manifests (`workloads/*/workload.yaml`), newest version last."""
        found = []
        for path in sorted(WORKLOADS_DIR.glob("*/workload.yaml")):
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as error:
                log.warning("workload manifest unreadable", path=str(path), error=str(error))
                continue
            inputs = raw.get("input") or raw.get("inputs") or {}
            found.append(
                WorkloadInfo(
                    name=str(raw.get("name", path.parent.name)),
                    version=str(raw.get("version", "")),
                    description=str(raw.get("description", "")),
                    owner=str(raw.get("owner") or raw.get("owner_team") or ""),
                    input_kind=str(inputs.get("kind", "")) if isinstance(inputs, dict) else "",
                )
            )
        return found

    def count_inputs(self, request: JobRequest, limit: int) -> int | None:
        from asr_assets.definitions import aws_resources, environment_from, local_resources

        environment = environment_from(os.environ)
        build = local_resources if environment.value == "local" else aws_resources
        store = build(os.environ)["store"]
        if request.manifest is not None:
            key = _store_key(request.manifest)
            if key.endswith(".parquet"):
                import pyarrow.parquet as pq

                return pq.ParquetFile(io.BytesIO(store.read_bytes(key))).metadata.num_rows
            return sum(1 for line in store.read_bytes(key).splitlines() if line.strip())
        count = 0
        for _ in store.iter_objects(_store_key(request.input_prefix or "")):
            count += 1
            if count > limit:
                break
        return count

    def check_ready(self) -> None:
        instance = self._instance()
        instance.get_runs_count()


def _store_key(location: str) -> str:
    """The key inside the configured store (`s3://bucket/key` keeps only `key`)."""
    if location.startswith("s3://"):
        return location[5:].partition("/")[2]
    return location
