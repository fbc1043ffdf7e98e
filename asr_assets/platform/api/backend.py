"""The narrow boundary between the HTTP service and the job engine.

`JobsBackend` is all the API needs from the platform core; `PlatformJobsBackend` implements it
with the core's Python API (`asr_assets.platform.jobs`), imported lazily so that importing the
service loads neither Dagster nor the engine until a request needs them.
"""

from __future__ import annotations

import io
import logging
import os
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

from asr_assets.observability.logging import get_logger
from asr_assets.platform.jobs.models import JobRequest, JobResults, JobStatus

if TYPE_CHECKING:
    from asr_assets.resources.object_store import ObjectStore

log = get_logger(__name__)


class WorkloadResourcesInfo(BaseModel):
    cpu: str
    memory: str
    gpu: int


class WorkloadInfo(BaseModel):
    """One registered workload version, as the platform core's registry loaded it."""

    name: str
    version: str
    ref: str = Field(description="`name:version`, what a job's `workload` resolves to")
    description: str = ""
    owner: str = Field(default="", description="the owning team")
    input_kinds: list[str] = Field(default_factory=list, description="`prefix` and/or `manifest`")
    manifest_fields: dict[str, str] = Field(
        default_factory=dict, description="per-file fields a manifest must give (Arrow types)"
    )
    output_columns: list[str] = Field(default_factory=list)
    image: str | None = None
    resources: WorkloadResourcesInfo | None = None
    shard_size: int | None = None
    timeout_s: float | None = None


class WorkloadRegistryError(RuntimeError):
    """The workload registry cannot be loaded (an invalid or duplicate manifest)."""


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

        return submit(in_store_keys(request, self._store()))

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
            # Some engine events carry no message; their type says what happened.
            event_type = entry.dagster_event_type
            message = entry.user_message or (event_type.value if event_type else "")
            lines.append(f"{moment:.3f} {level} {entry.step_key or '-'} {message}")
        return lines

    def workloads(self) -> list[WorkloadInfo]:
        """Every version in the core's registry (`workloads/` plus ASR_WORKLOAD_DIRS).

        The registry is the one place that validates manifests and resolves `name:1`, so the
        list shows exactly what a submission can run; an invalid registry is an error here too.
        """
        from asr_assets.platform.workloads import RegistryError, WorkloadRegistry

        try:
            registry = WorkloadRegistry.from_environment()
        except RegistryError as error:
            raise WorkloadRegistryError(str(error)) from error
        return [
            WorkloadInfo(
                name=manifest.name,
                version=manifest.version,
                ref=manifest.ref,
                description=manifest.description,
                owner=manifest.owner_team,
                input_kinds=[kind.value for kind in manifest.input.kinds],
                manifest_fields=dict(manifest.input.fields),
                output_columns=[column.name for column in manifest.output],
                image=manifest.image,
                resources=WorkloadResourcesInfo(**manifest.resources.model_dump()),
                shard_size=manifest.shard_size,
                timeout_s=manifest.timeout_s,
            )
            for manifest in registry.all()
        ]

    def _store(self) -> ObjectStore:
        """The object store the job code location uses (same environment, same settings)."""
        from asr_assets.definitions import aws_resources, environment_from, local_resources

        environment = environment_from(os.environ)
        build = local_resources if environment.value == "local" else aws_resources
        return build(os.environ)["store"]  # type: ignore[return-value]

    def count_inputs(self, request: JobRequest, limit: int) -> int | None:
        """What the core will read: the workload's audio files under the prefix, or the
        manifest's rows (a workload the registry does not know counts as unknown)."""
        from asr_assets.platform.jobs.shards import iter_candidates
        from asr_assets.platform.workloads import WorkloadRegistry

        store = self._store()
        request = in_store_keys(request, store)
        if request.manifest is not None:
            key = request.manifest.strip("/")
            if key.endswith(".parquet"):
                import pyarrow.parquet as pq

                return pq.ParquetFile(io.BytesIO(store.read_bytes(key))).metadata.num_rows
            return sum(1 for line in store.read_bytes(key).splitlines() if line.strip())
        manifest = WorkloadRegistry.from_environment().resolve(request.workload)
        count = 0
        for _ in iter_candidates(store, request, manifest):
            count += 1
            if count > limit:
                break
        return count

    def check_ready(self) -> None:
        instance = self._instance()
        instance.get_runs_count()


def store_key(location: str, store: ObjectStore) -> str:
    """A location as a key inside the platform's store: `s3://bucket/root/key` becomes `key`.

    The core reads and writes store keys only. A URI in another bucket, outside the store's
    root prefix, or any URI when the store is a local directory names data the platform cannot
    reach: that is the request's mistake (a ValueError, answered 422), found before any run.
    """
    if not location.startswith("s3://"):
        return location
    from asr_assets.resources.s3 import S3ObjectStore

    if not isinstance(store, S3ObjectStore):
        raise ValueError(f"{location}: the platform's store is not S3; give a key within it")
    bucket, _, key = location[len("s3://") :].partition("/")
    if bucket != store.bucket:
        raise ValueError(f"{location}: not in the platform's bucket ({store.bucket})")
    root = store.prefix.strip("/")
    if root:
        if not key.startswith(f"{root}/"):
            raise ValueError(f"{location}: outside the platform's store (s3://{bucket}/{root}/)")
        key = key[len(root) + 1 :]
    if not key.strip("/"):
        raise ValueError(f"{location}: names the whole store, not a prefix within it")
    return key


def in_store_keys(request: JobRequest, store: ObjectStore) -> JobRequest:
    """The request with every location as a store key (see `store_key`).

    Key prefixes (the tenant's) that lie elsewhere are dropped: no audio key in this store can
    match them anyway, and the core then falls back to the stricter input-prefix rule.
    """
    key_prefixes = []
    for prefix in request.key_prefixes:
        try:
            key_prefixes.append(store_key(prefix, store))
        except ValueError as exc:
            log.debug("tenant_prefix_outside_store", reason=str(exc))
    return request.model_copy(
        update={
            "input_prefix": None
            if request.input_prefix is None
            else store_key(request.input_prefix, store),
            "manifest": None if request.manifest is None else store_key(request.manifest, store),
            "output_prefix": store_key(request.output_prefix, store),
            "key_prefixes": key_prefixes,
        }
    )
