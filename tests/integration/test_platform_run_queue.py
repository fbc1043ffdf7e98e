"""The run queue as configured in dagster.yaml, worked by Dagster's own queue daemon.

The daemon's dequeue iteration (QueuedRunCoordinatorDaemon) runs for real over the instance's
queued runs, with the tenant limit and priorities from the shipped dagster.yaml; only the final
launch is Dagster's recording test launcher, so the test sees the order runs leave the queue
without executing them.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from asr_assets.platform.jobs.models import DAGSTER_PRIORITY, Priority

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin("asr_assets"),
        repository_name="__repository__",
    ),
    job_name="asr_job",
)


def _queue(instance: dg.DagsterInstance, tenant: str, priority: Priority) -> str:
    run = create_run_for_test(
        instance,
        job_name="asr_job",
        remote_job_origin=ORIGIN,
        status=dg.DagsterRunStatus.QUEUED,
        tags={"asr/tenant": tenant, "dagster/priority": str(DAGSTER_PRIORITY[priority])},
    )
    return run.run_id


def test_a_tenants_burst_does_not_starve_another_and_high_priority_goes_first(
    tmp_path: Path,
) -> None:
    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_coordinator"]
    per_tenant = next(
        rule["limit"]
        for rule in shipped["config"]["tag_concurrency_limits"]
        if rule["key"] == "asr/tenant"
    )
    overrides = {
        "run_coordinator": shipped,
        "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
    }
    with (
        dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance,
        create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as workspace,
    ):
        burst = [_queue(instance, "team-a", Priority.NORMAL) for _ in range(6)]
        team_b = _queue(instance, "team-b", Priority.NORMAL)
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        list(daemon.run_iteration(workspace))
        launched = [run.run_id for run in instance.run_launcher.queue()]
        # team-b's one run leaves the queue in the first pass despite six of team-a's ahead.
        assert team_b in launched
        assert len([r for r in launched if r in burst]) == per_tenant

        lows = [_queue(instance, "team-c", Priority.LOW) for _ in range(3)]
        high = _queue(instance, "team-c", Priority.HIGH)
        list(daemon.run_iteration(workspace))
        launched = [run.run_id for run in instance.run_launcher.queue()]
        c_launched = [r for r in launched if r in [*lows, high]]
        # Queued last, the high-priority run still goes first; the tenant limit holds.
        assert c_launched[0] == high and len(c_launched) == per_tenant
        assert lows[-1] not in launched
