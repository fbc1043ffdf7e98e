"""Jobs on Dagster: one dynamic partition and one run per job, three thin assets.

`job_inputs` lists the prefix or streams the manifest into shard tables; `job_outputs` runs the
workload on every uncommitted shard through Pipes and commits the good ones; `job_report` sums
counts, errors by reason and usage, and its blocking check fails the run when shards failed
(their good neighbours stay committed; a rerun retries only the failed ones).
"""

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from asr_assets.core.errors import ReasonCode
from asr_assets.platform.jobs.launch import (
    K8sShardLauncher,
    ShardLauncher,
    ShardRun,
    SubprocessShardLauncher,
)
from asr_assets.platform.jobs.models import JobRequest
from asr_assets.platform.jobs.shards import (
    BadOutputError,
    InputPlan,
    JobInputError,
    build_inputs,
    commit_shard,
    committed_record,
    input_shard_key,
    job_keys,
    now_iso,
    read_input_plan,
    shard_input_keys,
    staging_key,
    validate_output,
)
from asr_assets.platform.jobs.tagging import output_tags, tag_objects
from asr_assets.platform.workloads.models import WorkloadManifest
from asr_assets.platform.workloads.registry import (
    REPO_ROOT,
    WorkloadRegistry,
    registry_folders,
)
from asr_assets.resources.object_store import LocalObjectStore, ObjectStore

job_partitions = dg.DynamicPartitionsDefinition(name="jobs")
JOB_NAME = "asr_job"
JOB_ASSET_NAMES = ("job_inputs", "job_outputs", "job_report")
ALL_SHARDS_CHECK = "all_shards_committed"
TAG_PREFIX = "asr/"


class JobRunConfig(dg.Config):
    """The job as submitted; the same on all three assets and copied by every rerun."""

    request: str = Field(description="the JobRequest as JSON")
    workload_ref: str = Field(description="exact `name:version` resolved at submission")

    def job_request(self) -> JobRequest:
        return JobRequest.model_validate_json(self.request)


class WorkloadsResource(dg.ConfigurableResource):
    """The workload registry: the repository's `workloads/` plus `extra_dirs`."""

    extra_dirs: list[str] = Field(default_factory=list)

    def registry(self) -> WorkloadRegistry:
        return WorkloadRegistry.from_folders(
            [*registry_folders({}), *(Path(d) for d in self.extra_dirs)]
        )


class WorkloadLauncherResource(dg.ConfigurableResource):
    """Where shards run: `subprocess` on this machine, or `k8s` (one pod per shard)."""

    kind: Literal["subprocess", "k8s"] = "subprocess"
    namespace: str | None = None
    service_account: str | None = None

    def launcher(self) -> ShardLauncher:
        if self.kind == "k8s":
            return K8sShardLauncher(self.namespace, self.service_account)
        return SubprocessShardLauncher()


def store_spec(store: ObjectStore) -> dict[str, Any]:
    """How a workload process reaches the same store (no credentials: those come from its
    environment or pod identity)."""
    if isinstance(store, LocalObjectStore):
        return {"kind": "local", "root": str(Path(store.root).resolve())}
    spec = {"kind": "s3"}
    for name in ("bucket", "prefix", "region_name", "endpoint_url"):
        spec[name] = getattr(store, name, None)
    return spec


def _job(context: dg.AssetExecutionContext, config: JobRunConfig, workloads: WorkloadsResource):
    request = config.job_request()
    manifest = workloads.registry().resolve(config.workload_ref)
    return context.partition_key, request, manifest


def _shard_size(request: JobRequest, manifest: WorkloadManifest) -> int:
    raw = request.params.get("shard_size")
    return max(1, int(raw)) if raw else manifest.shard_size


@dg.asset(
    partitions_def=job_partitions,
    group_name="platform_jobs",
    kinds={"parquet"},
    description="The job's files: listed or read from the manifest, checked, probed, sharded.",
)
def job_inputs(
    context: dg.AssetExecutionContext,
    config: JobRunConfig,
    store: ObjectStore,
    workloads: WorkloadsResource,
) -> dg.MaterializeResult:
    job_id, request, manifest = _job(context, config, workloads)
    try:
        plan = build_inputs(store, job_id, request, manifest, _shard_size(request, manifest))
    except JobInputError as exc:
        raise dg.Failure(description=f"job input refused: {exc}") from None
    return dg.MaterializeResult(
        metadata={
            "files": plan.files,
            "accepted": plan.accepted,
            "rejected_by_reason": dg.MetadataValue.json(plan.rejected_by_reason),
            "shards": plan.shards,
            "shard_size": plan.shard_size,
            "audio_seconds": plan.audio_seconds,
            "status": "cached" if plan.cached else "planned",
        }
    )


class ProgressTracker:
    """The job's progress, kept in the store (`_job/progress.json`) and in asset observations."""

    def __init__(
        self, context: dg.AssetExecutionContext, store: ObjectStore, request: JobRequest
    ) -> None:
        self.context = context
        self.store = store
        self.key = job_keys(request.output_prefix)["progress"]
        self.record: dict[str, Any] = {}
        self._last_write = 0.0

    def update(self, *, force: bool = True, **values: Any) -> None:
        self.record.update(values, updated_at=now_iso())
        now = time.monotonic()
        if not force and now - self._last_write < 1.0:
            return
        self._last_write = now
        self.store.write_json(self.key, self.record)
        if force:
            self.context.log_event(
                dg.AssetObservation(
                    asset_key=self.context.asset_key,
                    partition=self.context.partition_key,
                    metadata={"progress": dg.MetadataValue.json(self.record)},
                )
            )


def _extras(
    store: ObjectStore,
    job_id: str,
    request: JobRequest,
    manifest: WorkloadManifest,
    shard: int,
    run_id: str,
) -> dict[str, Any]:
    return {
        "asr_contract": 1,
        "job_id": job_id,
        "tenant": request.tenant,
        "shard": shard,
        "input_key": input_shard_key(request.output_prefix, shard),
        "output_key": staging_key(request.output_prefix, run_id, shard),
        "output_columns": [[c.name, c.type] for c in manifest.output],
        "store": store_spec(store),
        "params": dict(request.params),
        "model": manifest.model_path(REPO_ROOT),
        "model_sha256": manifest.model.sha256 if manifest.model else None,
    }


def run_one_shard(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    launcher: ShardLauncher,
    manifest: WorkloadManifest,
    extras: Mapping[str, Any],
    request: JobRequest,
    on_progress: Any,
) -> tuple[dict[str, Any] | None, ShardRun]:
    """Launch, validate, commit: the committed record, or None and why the shard failed."""
    shard = int(extras["shard"])
    run = launcher.run_shard(context, manifest, extras, context.run.tags, on_progress)
    staged = str(extras["output_key"])
    if run.reason is None:
        inputs = shard_input_keys(store, request.output_prefix, shard)
        try:
            _table, errors, ok = validate_output(store, staged, manifest.output_schema(), inputs)
        except BadOutputError as exc:
            run.reason, run.message = ReasonCode.SHARD_BAD_OUTPUT, str(exc)
        else:
            summary = run.summary()
            record = {
                "job_id": extras["job_id"],
                "run_id": context.run.run_id,
                "workload": manifest.ref,
                "files": len(inputs),
                "ok": ok,
                "errors_by_reason": errors,
                "usage": {
                    "audio_seconds": float(summary.get("audio_seconds", 0.0)),
                    "bytes_in": int(summary.get("bytes_in", 0)),
                    "bytes_out": int(store.size(staged) or 0),
                    "wall_seconds": round(run.wall_s, 3),
                    "cpu_seconds": round(run.cpu_s, 3),
                    "gpu_seconds": round(run.wall_s * manifest.resources.gpu, 3),
                },
            }
            tags = output_tags(context.run.tags)
            commit_shard(store, request.output_prefix, shard, staged, record, tags)
            return record, run
    if store.exists(staged):
        store.delete(staged)
    return None, run


@dg.asset(
    partitions_def=job_partitions,
    group_name="platform_jobs",
    deps=[job_inputs],
    kinds={"parquet"},
    description="Each shard run through the workload via Dagster Pipes, validated, committed "
    "with _SUCCESS; committed shards are skipped on reruns.",
)
def job_outputs(
    context: dg.AssetExecutionContext,
    config: JobRunConfig,
    store: ObjectStore,
    workloads: WorkloadsResource,
    workload_launcher: WorkloadLauncherResource,
) -> dg.MaterializeResult:
    job_id, request, manifest = _job(context, config, workloads)
    plan = read_input_plan(store, request)
    if plan is None or plan.job_id != job_id:
        raise dg.Failure(description="job inputs are not planned (job_inputs did not run)")
    launcher = workload_launcher.launcher()
    rejected = sum(plan.rejected_by_reason.values())
    tracker = ProgressTracker(context, store, request)
    done, failed, skipped, committed = 0, 0, 0, 0
    failed_shards: dict[str, str] = {}
    errors: Counter[str] = Counter(plan.rejected_by_reason)
    tracker.update(
        job_id=job_id,
        run_id=context.run.run_id,
        worker_pid=os.getpid(),
        worker_host=socket.gethostname(),
        total=plan.files,
        done=0,
        failed=rejected,
        shards_total=plan.shards,
        shards_committed=0,
        failed_shards={},
        state="running",
    )
    for shard in range(plan.shards):
        record = committed_record(store, request.output_prefix, shard)
        if record is None:
            extras = _extras(store, job_id, request, manifest, shard, context.run.run_id)
            base = done

            def on_progress(shard_done: int, _total: int, base: int = base) -> None:
                tracker.update(force=False, done=base + shard_done)

            record, run = run_one_shard(
                context, store, launcher, manifest, extras, request, on_progress
            )
            if record is None:
                files = len(shard_input_keys(store, request.output_prefix, shard))
                failed += files
                failed_shards[str(shard)] = run.reason.value if run.reason else "unknown"
                context.log.warning(f"shard {shard} failed: {run.reason}: {run.message}")
        else:
            skipped += 1
        if record is not None:
            committed += 1
            done += int(record["files"])
            errors.update(record.get("errors_by_reason") or {})
        tracker.update(
            done=done,
            failed=rejected + failed,
            shards_committed=committed,
            failed_shards=failed_shards,
            errors_by_reason=dict(errors),
        )
    tracker.update(state="failed" if failed_shards else "done")
    return dg.MaterializeResult(
        metadata={
            "files": plan.files,
            "files_done": done,
            "files_failed": rejected + failed,
            "shards": plan.shards,
            "shards_skipped_committed": skipped,
            "failed_shards": dg.MetadataValue.json(failed_shards),
            "errors_by_reason": dg.MetadataValue.json(dict(errors)),
            "progress": dg.MetadataValue.json(tracker.record),
        }
    )


def build_report(
    store: ObjectStore, job_id: str, request: JobRequest, plan: InputPlan
) -> dict[str, Any]:
    """Counts, errors by reason and usage over every committed shard (of any run)."""
    usage: Counter[str] = Counter()
    errors: Counter[str] = Counter(plan.rejected_by_reason)
    files: list[str] = []
    failed_shards: list[int] = []
    ok = rows = 0
    for shard in range(plan.shards):
        record = committed_record(store, request.output_prefix, shard)
        if record is None:
            failed_shards.append(shard)
            continue
        files.append(str(record["file"]))
        rows += int(record["files"])
        ok += int(record["ok"])
        errors.update(record.get("errors_by_reason") or {})
        usage.update(record.get("usage") or {})
    return {
        "job_id": job_id,
        "workload": request.workload,
        "tenant": request.tenant,
        "files": plan.files,
        "files_ok": ok,
        "files_errored": plan.files - ok,
        "rows": rows,
        "shards": plan.shards,
        "failed_shards": failed_shards,
        "errors_by_reason": dict(sorted(errors.items())),
        "result_files": files,
        "usage": {
            "files": rows,
            "audio_seconds": round(usage["audio_seconds"], 3),
            "wall_seconds": round(usage["wall_seconds"], 3),
            "cpu_seconds": round(usage["cpu_seconds"], 3),
            "gpu_seconds": round(usage["gpu_seconds"], 3),
            "bytes_in": int(usage["bytes_in"]),
            "bytes_out": int(usage["bytes_out"]),
        },
        "written_at": now_iso(),
    }


@dg.asset(
    partitions_def=job_partitions,
    group_name="platform_jobs",
    deps=[job_outputs],
    kinds={"json"},
    check_specs=[
        dg.AssetCheckSpec(
            ALL_SHARDS_CHECK,
            asset="job_report",
            blocking=True,
            description="Every shard is committed; fails the run when any shard failed.",
        )
    ],
    description="Counts, errors by reason, usage (files, audio-s, wall, CPU-s, GPU-s, bytes).",
)
def job_report(
    context: dg.AssetExecutionContext,
    config: JobRunConfig,
    store: ObjectStore,
    workloads: WorkloadsResource,
) -> dg.MaterializeResult:
    job_id, request, _manifest = _job(context, config, workloads)
    plan = read_input_plan(store, request)
    if plan is None:
        raise dg.Failure(description="job inputs are not planned")
    tags = output_tags(context.run.tags)
    report = {**build_report(store, job_id, request, plan), "tags": tags}
    key = job_keys(request.output_prefix)["report"]
    store.write_json(key, report)
    tag_objects(store, [key], tags)
    failed = report["failed_shards"]
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.json(report),
            "report_key": key,
            "result_files": dg.MetadataValue.json(report["result_files"]),
            "rows": report["rows"],
            "failed_shards": dg.MetadataValue.json(failed),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ALL_SHARDS_CHECK,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"failed_shards": dg.MetadataValue.json(failed)},
                description=f"{len(failed)} of {plan.shards} shards failed" if failed else None,
            )
        ],
    )


JOB_ASSETS = [job_inputs, job_outputs, job_report]

asr_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(*JOB_ASSETS),  # partitioned by `jobs`, inferred
    # One process per run: shards already run in their own processes (or pods), and the run's
    # PID is the one to signal.
    executor_def=dg.in_process_executor,
    description="One platform job: a workload over a prefix or manifest (see docs/platform.md).",
)


def job_resources(environ: Mapping[str, str]) -> dict[str, dg.ConfigurableResource]:
    """The registry and launcher, from `ASR_WORKLOAD_DIRS` and `ASR_JOB_LAUNCHER` (+ k8s vars)."""
    extra = [d for d in environ.get("ASR_WORKLOAD_DIRS", "").split(os.pathsep) if d]
    kind = environ.get("ASR_JOB_LAUNCHER", "subprocess").strip().lower() or "subprocess"
    if kind not in ("subprocess", "k8s"):
        raise ValueError(f"ASR_JOB_LAUNCHER={kind!r} is not 'subprocess' or 'k8s'")
    return {
        "workloads": WorkloadsResource(extra_dirs=extra),
        "workload_launcher": WorkloadLauncherResource(
            kind=kind,  # type: ignore[arg-type]
            namespace=environ.get("ASR_JOB_NAMESPACE") or None,
            service_account=environ.get("ASR_JOB_SERVICE_ACCOUNT") or None,
        ),
    }


def job_definitions(environ: Mapping[str, str]) -> dg.Definitions:
    """Merged into the code location by `asr_assets.platform.location` (the store comes from it)."""
    return dg.Definitions(assets=JOB_ASSETS, jobs=[asr_job], resources=job_resources(environ))


def run_config_for(request: JobRequest, workload_ref: str) -> dict[str, Any]:
    config = {"request": request.model_dump_json(), "workload_ref": workload_ref}
    return {"ops": {name: {"config": config} for name in JOB_ASSET_NAMES}}


def request_from_run_config(run_config: Mapping[str, Any]) -> tuple[JobRequest, str]:
    config = run_config["ops"]["job_inputs"]["config"]
    return JobRequest.model_validate(json.loads(config["request"])), str(config["workload_ref"])
