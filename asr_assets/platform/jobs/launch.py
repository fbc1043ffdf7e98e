"""Starting one shard of a workload through Dagster Pipes: a local process or a Kubernetes pod.

Both launchers pass the same extras (the shard's job context) and read the same messages back;
only where the process runs differs. Timeouts are enforced here (process group killed) and, on
Kubernetes, by the pod's `activeDeadlineSeconds` as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterPipesExecutionError
from dagster._core.pipes.context import PipesSession

from asr_assets.core.errors import ReasonCode
from asr_assets.platform.workloads.models import WorkloadManifest

ProgressCallback = Callable[[int, int], None]
KILL_GRACE_S = 5.0
POLL_S = 0.25


class ShardTimeoutError(RuntimeError):
    """The workload ran past its manifest's `timeout_s`."""


@dataclass
class ShardRun:
    """What happened to one launch; `reason` is None when the process exited 0."""

    reason: ReasonCode | None
    message: str
    messages: list[Any] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The workload's final `summary` message (empty when it sent none)."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("kind") == "summary":
                return message
        return {}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _latest_progress(session: PipesSession) -> tuple[int, int] | None:
    for message in reversed(session.get_custom_messages()):
        if isinstance(message, dict) and message.get("kind") == "progress":
            return int(message.get("done", 0)), int(message.get("total", 0))
    return None


class TimedPipesSubprocessClient(dg.PipesSubprocessClient):
    """`PipesSubprocessClient` plus a timeout, its own process group, and live progress.

    The stock client waits forever; a hung workload would hold its run slot for good. Here the
    process gets its own session so a timeout or a cancel kills everything it started.
    """

    def run_with_timeout(
        self,
        *,
        context: dg.AssetExecutionContext,
        extras: Mapping[str, Any],
        command: Sequence[str],
        cwd: str | None,
        env: Mapping[str, str] | None,
        timeout_s: float,
        on_progress: ProgressCallback | None = None,
    ) -> list[Any]:
        """The workload's custom messages; raises on timeout or a non-zero exit."""
        with dg.open_pipes_session(
            context=context,
            context_injector=self.context_injector,
            message_reader=self.message_reader,
            extras=dict(extras),
        ) as session:
            process = subprocess.Popen(
                list(command),
                cwd=cwd,
                env={**os.environ, **self.env, **(env or {}), **session.get_bootstrap_env_vars()},
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout_s
            seen: tuple[int, int] | None = None
            try:
                while process.poll() is None:
                    if time.monotonic() > deadline:
                        _kill_group(process)
                        raise ShardTimeoutError(f"workload ran past its {timeout_s:g}s timeout")
                    time.sleep(POLL_S)
                    progress = _latest_progress(session)
                    if on_progress is not None and progress is not None and progress != seen:
                        seen = progress
                        on_progress(*progress)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
                _kill_group(process)
                raise
            if process.returncode != 0:
                raise DagsterPipesExecutionError(f"workload exited with code {process.returncode}")
        return list(session.get_custom_messages())


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=KILL_GRACE_S)


class ShardLauncher(Protocol):
    def run_shard(
        self,
        context: dg.AssetExecutionContext,
        manifest: WorkloadManifest,
        extras: Mapping[str, Any],
        tags: Mapping[str, str],
        on_progress: ProgressCallback | None = None,
    ) -> ShardRun: ...


def local_command(manifest: WorkloadManifest) -> list[str]:
    """The manifest's command, with a leading `python` meaning this interpreter."""
    command = list(manifest.command)
    if command[0] in ("python", "python3"):
        command[0] = sys.executable
    return command


class SubprocessShardLauncher:
    """Runs the workload's command on this machine, in the workload's folder."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    def run_shard(
        self,
        context: dg.AssetExecutionContext,
        manifest: WorkloadManifest,
        extras: Mapping[str, Any],
        tags: Mapping[str, str],
        on_progress: ProgressCallback | None = None,
    ) -> ShardRun:
        del tags
        client = TimedPipesSubprocessClient(env=self.env)
        started, cpu_before = time.monotonic(), _children_cpu_s()
        # The repository root first on the path: `python -m asr_assets...` works from any folder.
        repo_root = str(_repo_root())
        path = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH", "")) if p)
        run = ShardRun(reason=None, message="ok")
        messages: list[Any] = []
        try:
            messages = client.run_with_timeout(
                context=context,
                extras=extras,
                command=local_command(manifest),
                cwd=manifest.folder,
                env={"PYTHONPATH": path},
                timeout_s=manifest.timeout_s,
                on_progress=on_progress,
            )
        except ShardTimeoutError as exc:
            run = ShardRun(ReasonCode.SHARD_TIMEOUT, str(exc))
        except DagsterPipesExecutionError as exc:
            run = ShardRun(ReasonCode.SHARD_NONZERO_EXIT, str(exc))
        except OSError as exc:
            run = ShardRun(ReasonCode.SHARD_LAUNCH_FAILED, f"cannot start workload: {exc}")
        run.wall_s = time.monotonic() - started
        run.cpu_s = max(0.0, _children_cpu_s() - cpu_before)
        run.messages = messages
        return run


def _repo_root() -> Any:
    from asr_assets.platform.workloads.registry import REPO_ROOT

    return REPO_ROOT


_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")
#: Label prefix (a DNS subdomain) of the job's user tags on workload pods.
USER_LABEL_PREFIX = "tags.asr"


def label_value(value: str) -> str:
    """A Kubernetes label value: alphanumerics, '-', '_', '.', at most 63, alphanumeric ends."""
    cleaned = _LABEL_VALUE.sub("-", value)[:63].strip("-_.")
    return cleaned or "none"


def k8s_pod_overrides(
    manifest: WorkloadManifest,
    tags: Mapping[str, str],
    *,
    service_account: str | None = None,
    shard: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(base_pod_meta, base_pod_spec)` for `PipesK8sClient.run` from a workload manifest.

    Requests equal limits (guaranteed QoS for CPU and memory: a batch shard should not be
    throttled by its neighbours); a GPU workload asks for `nvidia.com/gpu` and tolerates the
    GPU node taint. Labels carry the job's tags so cost and usage can be attributed per tenant,
    team and cost center from the cluster's own metrics.
    """
    labels = {
        "app.kubernetes.io/name": "asr-workload",
        "app.kubernetes.io/component": label_value(manifest.name),
        "asr/workload": label_value(manifest.name),
        "asr/workload-version": label_value(manifest.version),
    }
    for tag in ("asr/job", "asr/tenant", "asr/team", "asr/priority", "asr/cost-center"):
        if tag in tags:
            labels[tag] = label_value(tags[tag])
    # The submitter's own tags (e.g. `project`), under their own prefix so they can never
    # overwrite the platform's labels; Kubernetes allows far more labels than S3 allows tags.
    for tag, value in sorted(tags.items()):
        if not tag.startswith(("asr/", "dagster/", ".dagster")):
            labels[f"{USER_LABEL_PREFIX}/{label_value(tag)}"] = label_value(value)
    if shard is not None:
        labels["asr/shard"] = str(shard)
    annotations = {"asr/workload-ref": manifest.ref}
    requests: dict[str, str] = {
        "cpu": manifest.resources.cpu,
        "memory": manifest.resources.memory,
    }
    limits = dict(requests)
    if manifest.resources.gpu:
        limits["nvidia.com/gpu"] = str(manifest.resources.gpu)
        requests["nvidia.com/gpu"] = str(manifest.resources.gpu)
    container: dict[str, Any] = {
        "name": "dagster-pipes-execution",
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": int(manifest.timeout_s),
        "containers": [container],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if manifest.resources.gpu:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"labels": labels, "annotations": annotations}, spec


class K8sShardLauncher:
    """One pod per shard through `dagster_k8s.PipesK8sClient` (the production launcher)."""

    def __init__(
        self,
        namespace: str | None = None,
        service_account: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.service_account = service_account
        self.env = dict(env or {})

    def run_shard(
        self,
        context: dg.AssetExecutionContext,
        manifest: WorkloadManifest,
        extras: Mapping[str, Any],
        tags: Mapping[str, str],
        on_progress: ProgressCallback | None = None,
    ) -> ShardRun:
        from dagster_k8s import PipesK8sClient

        del on_progress  # pods report progress in their messages; read after completion
        if not manifest.image:
            return ShardRun(ReasonCode.SHARD_LAUNCH_FAILED, f"{manifest.ref} has no image")
        meta, spec = k8s_pod_overrides(
            manifest, tags, service_account=self.service_account, shard=int(extras["shard"])
        )
        started = time.monotonic()
        try:
            invocation = PipesK8sClient().run(
                context=context,
                extras=dict(extras),
                image=manifest.image,
                command=list(manifest.command),
                namespace=self.namespace,
                env=self.env,
                base_pod_meta=meta,
                base_pod_spec=spec,
                pod_wait_timeout=manifest.timeout_s,
            )
        except DagsterPipesExecutionError as exc:
            return ShardRun(ReasonCode.SHARD_NONZERO_EXIT, str(exc)[:500])
        except Exception as exc:  # noqa: BLE001 - the cluster API's errors vary; the shard fails
            reason = (
                ReasonCode.SHARD_TIMEOUT
                if "timed out" in str(exc).lower()
                else ReasonCode.SHARD_LAUNCH_FAILED
            )
            return ShardRun(reason, str(exc)[:500])
        wall = time.monotonic() - started
        return ShardRun(
            None,
            "ok",
            # The completed invocation keeps its session's messages (no public accessor).
            list(invocation._session.get_custom_messages()),
            wall_s=wall,
            cpu_s=0.0,
        )
