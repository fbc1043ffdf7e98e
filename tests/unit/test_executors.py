"""ASR_EXECUTOR: step isolation on Kubernetes in production, Dagster's default locally."""

import dagster as dg
import kubernetes_validate
import pytest
from dagster._config import validate_config
from dagster_k8s import k8s_job_executor

from asr_assets.definitions import build_definitions
from asr_assets.executors import (
    CPU_STEP_K8S_CONFIG,
    GPU_STEP_K8S_CONFIG,
    UnknownExecutorError,
    executor_for,
    k8s_executor_config,
)
from tests.support.k8s import pod_manifest
from tools.deploy.policy import container_violations


def test_unset_keeps_the_callers_default() -> None:
    assert executor_for({}) is None
    assert executor_for({}, default=dg.in_process_executor) is dg.in_process_executor
    assert executor_for({"ASR_EXECUTOR": "multiprocess"}) is dg.multiprocess_executor


def test_unknown_executor_is_an_error() -> None:
    with pytest.raises(UnknownExecutorError, match="ASR_EXECUTOR='celery'"):
        executor_for({"ASR_EXECUTOR": "celery"})
    with pytest.raises(UnknownExecutorError, match="MAX_CONCURRENT"):
        k8s_executor_config({"ASR_K8S_MAX_CONCURRENT_STEPS": "0"})


def test_k8s_selects_the_k8s_job_executor_for_the_scoring_job() -> None:
    definitions = build_definitions({"ASR_EXECUTOR": "k8s"})
    job = definitions.resolve_job_def("score_letters")
    assert job.executor_def.name == "k8s"
    assert job.executor_def.executor_creation_fn is k8s_job_executor.executor_creation_fn
    assert build_definitions({}).resolve_job_def("score_letters").executor_def.name != "k8s"


def test_k8s_config_is_valid_for_the_executor_and_routes_gpu_steps() -> None:
    config = k8s_executor_config(
        {"ASR_K8S_GPU_STEPS": "transcripts", "ASR_K8S_MAX_CONCURRENT_STEPS": "6"}
    )
    result = validate_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    assert config["max_concurrent"] == 6
    assert config["per_step_k8s_config"] == {"transcripts": GPU_STEP_K8S_CONFIG}
    assert "nvidia.com/gpu" not in str(config["step_k8s_config"])


@pytest.mark.parametrize(
    "k8s_config", [CPU_STEP_K8S_CONFIG, GPU_STEP_K8S_CONFIG], ids=["cpu", "gpu"]
)
def test_step_pods_are_valid_and_hardened(k8s_config: dict) -> None:
    pod = pod_manifest(k8s_config)
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    assert container_violations(pod["spec"], pod["spec"]["containers"][0]) == []
