"""Runs of the `score_letters` job that the CLI starts, as real job runs on the instance.

`dg.materialize` would record an `__ephemeral_asset_job__` run with no origin: not on the job's
timeline and not re-executable from the UI. Here the run is created the way the webserver
creates one (the job reconstructed from `asr_assets.platform.location`, its remote origin naming the
workspace's code location) and then executed in this process, so the CLI shows progress live
and the UI can re-execute the run afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from dagster._core.execution.execution_result import ExecutionResult
    from dagster._core.remote_origin import RemoteJobOrigin

DEFINITIONS_MODULE = "asr_assets.platform.location"
DEFINITIONS_ATTRIBUTE = "defs"
#: The code location's name in workspace.yaml (`make dev`); a test keeps the two equal.
LOCATION_NAME = "asr_assets"
REPOSITORY_NAME = "__repository__"
JOB_NAME = "score_letters"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StepFailure:
    """The failed step and the one line that says why."""

    step: str
    cause: str


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    result: ExecutionResult
    failures: list[StepFailure] = field(default_factory=list)


def remote_job_origin(job_name: str = JOB_NAME) -> RemoteJobOrigin:
    """The origin `dagster dev -w workspace.yaml` gives the job (re-execution looks it up)."""
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(PROJECT_ROOT),
        ),
        location_name=LOCATION_NAME,
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY_NAME), job_name)


def one_line_cause(event: dg.DagsterEvent) -> str:
    """A step failure in one line: the `dg.Failure` description, else the error's first line."""
    data = event.step_failure_data
    if data is None:
        return "unknown failure"
    if data.user_failure_data is not None and data.user_failure_data.description:
        text = data.user_failure_data.description
    elif data.error is not None:
        error = data.error
        while error.cause is not None and "dagster._core.errors" in (error.cls_name or ""):
            error = error.cause
        text = error.message
    else:
        text = "unknown failure"
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return first[:400]


def step_failures(result: ExecutionResult) -> list[StepFailure]:
    return [
        StepFailure(step=event.step_key or "?", cause=one_line_cause(event))
        for event in result.get_step_failure_events()
    ]


def run_score_job(
    instance: dg.DagsterInstance,
    partition_key: str,
    *,
    run_config: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Create a `score_letters` run for one day on `instance` and execute it here."""
    from dagster._core.definitions.reconstruct import (
        ReconstructableJob,
        ReconstructableRepository,
    )
    from dagster._core.execution.api import execute_run

    # Dagster keeps the last loaded job per process; a run must see the environment as it is
    # now (the CLI's --data-root / --model-dir), not as an earlier run in this process saw it.
    ReconstructableJob.get_definition.cache_clear()
    ReconstructableJob.get_repository_definition.cache_clear()
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, working_directory=str(PROJECT_ROOT)
    )
    recon_job = repository.get_reconstructable_job(JOB_NAME)
    job_def = recon_job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=dict(run_config or {}),
        tags={**job_def.tags, **(tags or {}), "dagster/partition": partition_key},
        job_code_origin=recon_job.get_python_origin(),
        remote_job_origin=remote_job_origin(),
    )
    result = execute_run(recon_job, run, instance)
    return RunOutcome(
        run_id=run.run_id,
        success=result.success,
        result=result,
        failures=[] if result.success else step_failures(result),
    )
