"""Runs of `asr score` that a killed process left `STARTED` are marked failed on the next start.

`asr score` executes in process: no run worker exists for Dagster's run monitoring to watch, so a
SIGKILL (OOM, a closed terminal, a node drain) leaves the run `STARTED` in the run history
forever. The next `asr score` on the same instance finds such runs and reports them failed,
with the reason, before it starts new ones. A run counts as abandoned when the process that
executed its steps is gone from this host, or, where that process is unknown, when the run has
logged nothing for `silent_after_s`.
"""

from __future__ import annotations

import os
import socket
import time

import dagster as dg
from dagster._core.events import DagsterEventType

from asr_assets.observability.logging import get_logger

log = get_logger(__name__)

CLI_TAGS = {"asr/source": "cli"}
DEFAULT_SILENT_AFTER_S = 3600.0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the in-process executor logged when it started the run's steps."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = getattr(event, "engine_event_data", None) if event else None
        metadata = getattr(data, "metadata", None) or {}
        pid = metadata.get("pid")
        value = getattr(pid, "value", pid)
        if value is not None and str(value).isdigit():
            return int(str(value))
    return None


def _last_activity(instance: dg.DagsterInstance, run_id: str) -> float | None:
    records = instance.all_logs(run_id)
    return max((record.timestamp for record in records), default=None)


def fail_abandoned_runs(
    instance: dg.DagsterInstance,
    tags: dict[str, str] | None = None,
    silent_after_s: float = DEFAULT_SILENT_AFTER_S,
) -> list[str]:
    """Report every abandoned `STARTED`/`STARTING` run with `tags` failed; returns their ids."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            tags=tags if tags is not None else CLI_TAGS,
        )
    )
    failed: list[str] = []
    now = time.time()
    host = socket.gethostname()
    for run in runs:
        if run.tags.get("asr/host") not in (None, host):
            continue  # another machine's process: not ours to judge
        pid = _run_pid(instance, run.run_id)
        if pid is not None:
            abandoned = pid != os.getpid() and not _process_alive(pid)
            reason = f"the process that ran it (pid {pid}) is gone"
        else:
            last = _last_activity(instance, run.run_id)
            abandoned = last is not None and now - last > silent_after_s
            reason = f"it logged nothing for more than {silent_after_s:.0f}s"
        if not abandoned:
            continue
        instance.report_run_failed(
            run, message=f"Marked failed on the next `asr score`: {reason} (killed?)."
        )
        log.warning("abandoned_run_failed", run_id=run.run_id, status="failed", reason=reason)
        failed.append(run.run_id)
    return failed
