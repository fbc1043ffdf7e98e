"""The Python API of platform jobs: submit, status, cancel, results, resume.

A job is one partition of `DynamicPartitionsDefinition("jobs")` and one Dagster run (plus one
more per resume). `submit` adds the partition and submits the run to the instance's run
coordinator, exactly as the Dagster UI would: with the queued coordinator (production,
`dagster dev`) the daemon launches it by priority and tenant limits; with the default
coordinator it is launched at once by the instance's run launcher. State, progress and usage
are read back from the instance (run records, asset observations and materializations), so
there is no second job table to drift from Dagster's.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus, RunRecord, RunsFilter

from asr_assets.observability.logging import get_logger
from asr_assets.platform.jobs.assets import (
    JOB_NAME,
    job_partitions,
    request_from_run_config,
    run_config_for,
)
from asr_assets.platform.jobs.models import (
    DAGSTER_PRIORITY,
    JobProgress,
    JobRequest,
    JobResults,
    JobState,
    JobStatus,
    JobUsage,
)
from asr_assets.platform.workloads.models import InputKind
from asr_assets.platform.workloads.registry import REPO_ROOT, WorkloadRegistry

log = get_logger(__name__)

JOB_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{2,63}$")
DEFINITIONS_MODULE = "asr_assets.platform.location"
LOCATION_NAME = "asr_assets"
#: A workspace.yaml to load the code location from (production); else the module above.
WORKSPACE_VARIABLE = "ASR_WORKSPACE_FILE"

_STATE = {
    DagsterRunStatus.QUEUED: JobState.QUEUED,
    DagsterRunStatus.NOT_STARTED: JobState.QUEUED,
    DagsterRunStatus.MANAGED: JobState.QUEUED,
    DagsterRunStatus.STARTING: JobState.QUEUED,
    DagsterRunStatus.STARTED: JobState.IN_PROGRESS,
    DagsterRunStatus.CANCELING: JobState.IN_PROGRESS,
    DagsterRunStatus.SUCCESS: JobState.COMPLETED,
    DagsterRunStatus.FAILURE: JobState.FAILED,
    DagsterRunStatus.CANCELED: JobState.CANCELED,
}


class JobNotFoundError(KeyError):
    """No job with this id exists on the instance."""


class JobExistsError(ValueError):
    """A job with this id was already submitted (use `resume` to run it again)."""


class JobActiveError(RuntimeError):
    """The job's run is still queued or running."""


@contextlib.contextmanager
def _instance(instance: dg.DagsterInstance | None) -> Iterator[dg.DagsterInstance]:
    if instance is not None:
        yield instance
        return
    with dg.DagsterInstance.get() as own:
        yield own


def job_tags(request: JobRequest, workload_ref: str, job_id: str) -> dict[str, str]:
    """Run tags: the job's identity for the queue (priority, tenant limits) and for cost."""
    user = {
        k: v for k, v in request.tags.items() if not k.startswith(("asr/", "dagster/", ".dagster"))
    }
    return {
        **user,
        "asr/job": job_id,
        "asr/tenant": request.tenant,
        "asr/team": request.team,
        "asr/workload": workload_ref,
        "asr/priority": request.priority.value,
        "asr/cost-center": request.cost_center,
        "asr/output-prefix": request.output_prefix,
        "dagster/priority": str(DAGSTER_PRIORITY[request.priority]),
        "dagster/partition": job_id,
    }


def _load_target() -> Any:
    from dagster._core.workspace.load_target import ModuleTarget, WorkspaceFileTarget

    workspace_file = os.environ.get(WORKSPACE_VARIABLE)
    if workspace_file:
        return WorkspaceFileTarget(paths=[workspace_file])
    return ModuleTarget(
        module_name=DEFINITIONS_MODULE,
        attribute=None,
        working_directory=str(REPO_ROOT),
        location_name=LOCATION_NAME,
    )


def _launch(
    instance: dg.DagsterInstance, run_config: Mapping[str, Any], tags: Mapping[str, str]
) -> str:
    """Create the run from the code location's job (as the UI does) and submit it."""
    from dagster._core.workspace.context import WorkspaceProcessContext

    with WorkspaceProcessContext(instance, _load_target()) as process_context:
        workspace = process_context.create_request_context()
        location_name = (
            LOCATION_NAME
            if os.environ.get(WORKSPACE_VARIABLE) is None
            else next(iter(workspace.get_code_location_entries()))
        )
        location = workspace.get_code_location(location_name)
        repository = next(
            repo for repo in location.get_repositories().values() if repo.has_job(JOB_NAME)
        )
        remote_job = repository.get_full_job(JOB_NAME)
        plan = location.get_execution_plan(
            remote_job,
            dict(run_config),
            step_keys_to_execute=None,
            known_state=None,
            instance=instance,
        )
        run = instance.create_run(
            job_name=JOB_NAME,
            run_id=None,
            run_config=dict(run_config),
            resolved_op_selection=None,
            step_keys_to_execute=None,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=dict(tags),
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        instance.submit_run(run.run_id, workspace)
        return run.run_id


def submit(request: JobRequest, *, instance: dg.DagsterInstance | None = None) -> str:
    """Validate the request against its workload, add the job's partition, submit its run."""
    manifest = WorkloadRegistry.from_environment().resolve(request.workload)
    kind = InputKind.PREFIX if request.input_prefix is not None else InputKind.MANIFEST
    if kind not in manifest.input.kinds:
        raise ValueError(f"{manifest.ref} does not read a {kind.value}")
    job_id = request.job_id or f"job-{uuid.uuid4().hex[:20]}"
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise ValueError("job_id must be 3-64 of a-z, 0-9, '-', '_' (starting alphanumeric)")
    request = request.model_copy(update={"job_id": job_id})
    with _instance(instance) as dagster:
        if dagster.has_dynamic_partition(job_partitions.name, job_id):  # type: ignore[arg-type]
            raise JobExistsError(f"job {job_id} already exists")
        dagster.add_dynamic_partitions(job_partitions.name, [job_id])  # type: ignore[arg-type]
        try:
            run_id = _launch(
                dagster,
                run_config_for(request, manifest.ref),
                job_tags(request, manifest.ref, job_id),
            )
        except BaseException:
            # No run, no job: the id stays free for a retry of the submission.
            dagster.delete_dynamic_partition(job_partitions.name, job_id)  # type: ignore[arg-type]
            raise
    log.info("job_submitted", job_id=job_id, run_id=run_id, workload=manifest.ref)
    return job_id


def _runs(instance: dg.DagsterInstance, job_id: str) -> list[RunRecord]:
    """The job's runs, newest first."""
    records = instance.get_run_records(RunsFilter(tags={"asr/job": job_id}))
    return sorted(records, key=lambda r: r.create_timestamp, reverse=True)


def _asset_events(
    instance: dg.DagsterInstance, run_id: str, event_type: DagsterEventType, asset: str
) -> list[Mapping[str, Any]]:
    """Metadata of the run's events of one type for one job asset, oldest first."""
    found = []
    for entry in instance.all_logs(run_id, of_type=event_type):
        event = entry.dagster_event
        if event is None or event.asset_key != dg.AssetKey(asset):
            continue
        data = event.event_specific_data
        metadata = getattr(getattr(data, "materialization", None), "metadata", None)
        if metadata is None:
            metadata = getattr(getattr(data, "asset_observation", None), "metadata", None)
        found.append({k: getattr(v, "value", v) for k, v in (metadata or {}).items()})
    return found


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str | None:
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = getattr(event, "event_specific_data", None)
        user = getattr(data, "user_failure_data", None)
        if user is not None and user.description:
            return str(user.description)
        error = getattr(data, "error", None)
        if error is not None:
            return str(error.message).strip().splitlines()[0][:500]
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE):
        return str(entry.message)[:500]
    return None


def _when(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def _report(instance: dg.DagsterInstance, runs: list[RunRecord]) -> Mapping[str, Any] | None:
    """The newest job report (its materialization metadata) of any of the job's runs."""
    for record in runs:
        reports = _asset_events(
            instance,
            record.dagster_run.run_id,
            DagsterEventType.ASSET_MATERIALIZATION,
            "job_report",
        )
        if reports:
            return reports[-1]
    return None


def status(job_id: str, *, instance: dg.DagsterInstance | None = None) -> JobStatus:
    with _instance(instance) as dagster:
        runs = _runs(dagster, job_id)
        if not runs:
            raise JobNotFoundError(job_id)
        latest = runs[0]
        run = latest.dagster_run
        request, workload_ref = request_from_run_config(run.run_config)
        state = _STATE.get(run.status, JobState.QUEUED)
        observed = _asset_events(
            dagster, run.run_id, DagsterEventType.ASSET_OBSERVATION, "job_outputs"
        )
        progress: Mapping[str, Any] = observed[-1].get("progress", {}) if observed else {}
        report = _report(dagster, runs) if state is not JobState.IN_PROGRESS else None
        report_body: Mapping[str, Any] = (report or {}).get("report") or {}
        failure = _failure_reason(dagster, run.run_id) if state is JobState.FAILED else None
        failed_shards = [int(s) for s in report_body.get("failed_shards", [])] or [
            int(s) for s in progress.get("failed_shards", {})
        ]
        if failed_shards and state is JobState.FAILED:
            reasons = sorted(set((progress.get("failed_shards") or {}).values()))
            failure = f"{len(failed_shards)} shard(s) failed" + (
                f": {', '.join(reasons)}" if reasons else ""
            )
        usage = report_body.get("usage")
        return JobStatus(
            job_id=job_id,
            state=state,
            workload=workload_ref,
            tenant=request.tenant,
            failure_reason=failure,
            created_at=_when(runs[-1].create_timestamp.timestamp()),
            started_at=_when(latest.start_time),
            finished_at=_when(latest.end_time) if run.is_finished else None,
            progress=JobProgress(
                done=int(progress.get("done", 0)),
                failed=int(progress.get("failed", 0)),
                total=int(progress.get("total", 0)),
            ),
            usage=JobUsage(**usage) if usage else JobUsage(),
            errors_by_reason=dict(
                report_body.get("errors_by_reason") or progress.get("errors_by_reason") or {}
            ),
            failed_shards=failed_shards,
            results_prefix=request.output_prefix,
            run_id=run.run_id,
            tags={k: v for k, v in run.tags.items() if k.startswith("asr/")},
        )


def cancel(job_id: str, *, instance: dg.DagsterInstance | None = None) -> JobStatus:
    """Cancel the job's active run through the run coordinator (dequeue, or terminate)."""
    with _instance(instance) as dagster:
        runs = _runs(dagster, job_id)
        if not runs:
            raise JobNotFoundError(job_id)
        run = runs[0].dagster_run
        if not run.is_finished:
            dagster.run_coordinator.cancel_run(run.run_id)
            log.info("job_cancel_requested", job_id=job_id, run_id=run.run_id)
        return status(job_id, instance=dagster)


def results(job_id: str, *, instance: dg.DagsterInstance | None = None) -> JobResults:
    """Committed result files so far (all of them once the job is COMPLETED)."""
    with _instance(instance) as dagster:
        current = status(job_id, instance=dagster)
        report = _report(dagster, _runs(dagster, job_id)) or {}
        return JobResults(
            job_id=job_id,
            state=current.state,
            result_files=list(report.get("result_files") or []),
            report_key=report.get("report_key"),
            rows=int(report.get("rows") or 0),
        )


def resume(
    job_id: str,
    *,
    instance: dg.DagsterInstance | None = None,
    mark_dead_run_failed: bool = False,
) -> str:
    """Run a failed or canceled job again: committed shards are skipped. Returns the run id.

    A run whose worker died without a word (SIGKILL, node loss) still reads as started until
    run monitoring notices; `mark_dead_run_failed` lets an operator who knows it is dead say so.
    """
    with _instance(instance) as dagster:
        runs = _runs(dagster, job_id)
        if not runs:
            raise JobNotFoundError(job_id)
        previous = runs[0].dagster_run
        if not previous.is_finished:
            if not mark_dead_run_failed:
                raise JobActiveError(f"job {job_id} has an active run {previous.run_id}")
            dagster.report_run_failed(previous, message="run worker died; marked by resume")
        request, workload_ref = request_from_run_config(previous.run_config)
        tags = {**job_tags(request, workload_ref, job_id), "asr/resume-of": previous.run_id}
        run_id = _launch(dagster, previous.run_config, tags)
    log.info("job_resumed", job_id=job_id, run_id=run_id, previous_run_id=previous.run_id)
    return run_id
