"""Turn dagster-k8s `container_config` / `pod_spec_config` (snake_case, as run config and the
`dagster-k8s/config` tag take them) into a Pod manifest that kubernetes-validate can check.

dagster-k8s passes these dicts through its own model parser when it builds a step or run pod, so
parsing them the same way here catches a misspelled field before a cluster would."""

from typing import Any

import kubernetes
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

IMAGE = "ghcr.io/example/asr-platform:0.1.0"


def pod_manifest(k8s_config: dict[str, Any], name: str = "step") -> dict[str, Any]:
    # dagster-k8s accepts camelCase (Helm values) or snake_case (run config) and normalises
    # with k8s_snake_case_dict before building its models; so do we.
    container_config = k8s_snake_case_dict(
        kubernetes.client.V1Container,
        {"name": name, "image": IMAGE, **k8s_config.get("container_config", {})},
    )
    pod_spec_config = k8s_snake_case_dict(
        kubernetes.client.V1PodSpec, {**k8s_config.get("pod_spec_config", {}), "containers": []}
    )
    container = k8s_model_from_dict(kubernetes.client.V1Container, container_config)
    spec = k8s_model_from_dict(kubernetes.client.V1PodSpec, pod_spec_config)
    spec.containers = [container]
    body = kubernetes.client.ApiClient().sanitize_for_serialization(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}
