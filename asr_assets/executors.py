"""The executor that runs a job's steps, chosen by `ASR_EXECUTOR`.

Kept apart from `definitions.py` so the environment switch for resources and the one for step
isolation evolve independently. Unset means "let the caller decide" (Dagster's default
multiprocess executor locally); `k8s` runs every step in its own Kubernetes Job
(`dagster_k8s.k8s_job_executor`), so one step's memory spike or crash cannot take a run's other
steps with it, and a GPU-bound step can ask for a GPU node while the rest stay on CPU nodes.
`dagster_k8s` is imported only when `k8s` is chosen: the local code location never pays for it.
"""

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import dagster as dg

# Pod settings shared by every step pod: restricted Pod Security (non-root, no privilege
# escalation, all capabilities dropped, read-only root FS with a writable scratch volume).
_POD_SECURITY: dict[str, Any] = {
    "security_context": {
        "run_as_non_root": True,
        "run_as_user": 10001,
        "run_as_group": 10001,
        "fs_group": 10001,
        "seccomp_profile": {"type": "RuntimeDefault"},
    },
    "volumes": [
        {"name": "scratch", "empty_dir": {"size_limit": "20Gi"}},
        {"name": "triton-ca", "config_map": {"name": "asr-triton-ca"}},
    ],
}
_CONTAINER_SECURITY: dict[str, Any] = {
    "security_context": {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    },
    "volume_mounts": [
        {"name": "scratch", "mount_path": "/tmp"},  # noqa: S108 (pod-local emptyDir)
        {"name": "triton-ca", "mount_path": "/etc/asr/triton-ca", "read_only": True},
    ],
}

# `dagster-k8s/config` for steps that need no GPU: the CPU node pool, sized for one
# partition's decode/align chunk (memory is bounded by the stages' chunking, not by the day).
CPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        **_CONTAINER_SECURITY,
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"cpu": "4", "memory": "8Gi"},
        },
    },
    "pod_spec_config": {
        **_POD_SECURITY,
        "node_selector": {"asr-platform/pool": "cpu"},
        "priority_class_name": "asr-batch-standard",
    },
}

# `dagster-k8s/config` for GPU-bound steps (the local engine on a GPU when Triton is not used):
# one GPU, the GPU pool's taint tolerated, GPU feature discovery's label selected.
GPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        **_CONTAINER_SECURITY,
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"},
        },
    },
    "pod_spec_config": {
        **_POD_SECURITY,
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priority_class_name": "asr-batch-standard",
    },
}


class ExecutorChoice(StrEnum):
    IN_PROCESS = "in_process"
    MULTIPROCESS = "multiprocess"
    K8S = "k8s"


class UnknownExecutorError(ValueError):
    """ASR_EXECUTOR names an executor this code location does not offer."""


def executor_choice(environ: Mapping[str, str]) -> ExecutorChoice | None:
    raw = environ.get("ASR_EXECUTOR", "").strip().lower()
    if not raw:
        return None
    try:
        return ExecutorChoice(raw)
    except ValueError:
        known = ", ".join(choice.value for choice in ExecutorChoice)
        raise UnknownExecutorError(f"ASR_EXECUTOR={raw!r} is not one of: {known}") from None


def k8s_executor_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """Run config for `k8s_job_executor`: CPU pods by default, GPU pods for the named steps.

    `ASR_K8S_GPU_STEPS` lists the GPU-bound step keys (comma-separated; empty by default because
    inference normally goes to Triton and `transcripts` is then a CPU client);
    `ASR_K8S_MAX_CONCURRENT_STEPS` bounds pods per run (default 4).
    """
    gpu_steps = [s.strip() for s in environ.get("ASR_K8S_GPU_STEPS", "").split(",") if s.strip()]
    raw_max = environ.get("ASR_K8S_MAX_CONCURRENT_STEPS", "").strip() or "4"
    if not raw_max.isdigit() or int(raw_max) < 1:
        raise UnknownExecutorError(
            f"ASR_K8S_MAX_CONCURRENT_STEPS={raw_max!r} is not a positive integer"
        )
    return {
        "max_concurrent": int(raw_max),
        "step_k8s_config": CPU_STEP_K8S_CONFIG,
        "per_step_k8s_config": {step: GPU_STEP_K8S_CONFIG for step in gpu_steps},
    }


def executor_for(
    environ: Mapping[str, str], default: dg.ExecutorDefinition | None = None
) -> dg.ExecutorDefinition | None:
    """The executor `ASR_EXECUTOR` asks for, or `default` when it is unset."""
    choice = executor_choice(environ)
    if choice is None:
        return default
    if choice is ExecutorChoice.IN_PROCESS:
        return dg.in_process_executor
    if choice is ExecutorChoice.MULTIPROCESS:
        return dg.multiprocess_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(environ), name="k8s")
