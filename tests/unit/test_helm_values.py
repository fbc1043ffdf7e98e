"""deploy/helm and deploy/dagster: the Dagster chart's values and the production instance.

No Helm binary here, so the values are checked for the structure the pinned chart accepts (the
fields we use, against the chart's schema), layered as Helm layers them, and for what the
platform needs; the instance YAML goes through Dagster's own config validation, each
configurable class's config schema included. CI also runs `helm template` for real."""

import copy
import shutil
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer
from dagster_postgres import DagsterPostgresStorage

from tests.support.k8s import pod_manifest
from tools.deploy.policy import container_violations, image_is_pinned
from tools.deploy.render import helm_merge, load_values

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "deploy" / "helm"
INSTANCE = ROOT / "deploy" / "dagster" / "dagster.yaml"
ENVIRONMENTS = ["staging", "production"]

# The chart's schema for the sections we set (Dagster chart 1.13: extra fields are forbidden).
K8S_RUN_LAUNCHER_FIELDS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
RUN_K8S_CONFIG_FIELDS = {
    "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata",
}  # fmt: skip
QUEUED_COORDINATOR_FIELDS = {
    "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
    "dequeueUseThreads",
}  # fmt: skip
POSTGRESQL_FIELDS = {
    "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
    "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service",
}  # fmt: skip


def _values(environment: str | None = None) -> dict[str, Any]:
    paths = [HELM / "values.yaml"]
    if environment:
        paths.append(HELM / f"values-{environment}.yaml")
    return load_values(*paths)


def _instance() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE.read_text())


def _hardening_violations(values: dict[str, Any]) -> list[str]:
    """Every container the chart renders from these values, checked with our pod policy."""
    sections = {
        "webserver": values["dagsterWebserver"],
        "daemon": values["dagsterDaemon"],
        **{
            f"user-deployment/{d['name']}": d
            for d in values["dagster-user-deployments"]["deployments"]
        },
    }
    found: list[str] = []
    for name, section in sections.items():
        image = f"{section['image']['repository']}:{section['image']['tag']}"
        container = {
            "name": name,
            "image": image,
            "securityContext": section.get("securityContext"),
            "resources": section.get("resources"),
        }
        found += container_violations(
            {"securityContext": section.get("podSecurityContext")}, container
        )
    run = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    pod = pod_manifest(
        {"container_config": run["containerConfig"], "pod_spec_config": run["podSpecConfig"]}
    )
    found += container_violations(pod["spec"], pod["spec"]["containers"][0])
    return found


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_values_use_only_fields_the_chart_accepts(environment: str | None) -> None:
    values = _values(environment)
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]["k8sRunLauncher"]) <= K8S_RUN_LAUNCHER_FIELDS
    assert set(launcher["config"]["k8sRunLauncher"]["runK8sConfig"]) <= RUN_K8S_CONFIG_FIELDS
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator" and coordinator["enabled"]
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert set(queued) <= QUEUED_COORDINATOR_FIELDS
    for limit in queued["tagConcurrencyLimits"]:
        assert set(limit) <= {"key", "value", "limit"} and isinstance(limit["limit"], int)
    assert set(values["postgresql"]) <= POSTGRESQL_FIELDS


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_postgres_is_external_and_its_password_comes_from_a_secret(environment: str | None) -> None:
    values = _values(environment)
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    assert values["postgresql"]["postgresqlParams"]["sslmode"] == "verify-full"


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_every_container_is_hardened_after_layering(environment: str | None) -> None:
    assert _hardening_violations(_values(environment)) == []


def test_a_layered_overlay_that_drops_hardening_is_caught() -> None:
    """Helm replaces lists: restating the deployment list in an overlay loses its settings."""
    broken = helm_merge(
        _values(),
        {
            "dagster-user-deployments": {
                "deployments": [{"name": "asr-assets", "image": {"repository": "r", "tag": "1.0"}}]
            }
        },
    )
    violations = _hardening_violations(broken)
    assert any("runAsNonRoot" in v for v in violations)
    assert any("no memory limits" in v for v in violations)
    root = copy.deepcopy(_values())
    root["dagsterDaemon"]["podSecurityContext"]["runAsUser"] = 0
    assert any("uid 0" in v for v in _hardening_violations(root))


def test_user_code_deployment_serves_our_code_location_from_our_image() -> None:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert deployment["image"]["repository"].endswith("/asr-platform")
    assert image_is_pinned(f"{deployment['image']['repository']}:{deployment['image']['tag']}")
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["ASR_ENV"] == "aws" and env["ASR_EXECUTOR"] == "k8s"
    dagster_version = next(
        line.split("==")[1]
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.startswith("dagster==")
    )
    assert _values()["dagsterWebserver"]["image"]["tag"] == dagster_version
    assert _values()["dagsterDaemon"]["image"]["tag"] == dagster_version


def test_user_code_probes_run_without_a_shell_or_console_script() -> None:
    """The image is distroless: the chart's args pass through ENTRYPOINT ["python3", "-m"],
    but an exec probe runs its command as is, so it must start with python3."""
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python3", "-m"]' in dockerfile
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    command = deployment["readinessProbe"]["exec"]["command"]
    assert command[:3] == ["python3", "-m", "dagster"] and "grpc-health-check" in command
    assert str(deployment["port"]) in command


def test_run_pods_are_valid_kubernetes() -> None:
    run = _values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    pod = pod_manifest(
        {"container_config": run["containerConfig"], "pod_spec_config": run["podSpecConfig"]}
    )
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    assert pod["spec"]["priorityClassName"] == "asr-batch-standard"


def test_production_instance_passes_dagster_validation(tmp_path: Path) -> None:
    shutil.copy(INSTANCE, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    for section in ("run_coordinator", "run_launcher", "compute_logs"):
        cls = class_from_code_pointer(config[section]["module"], config[section]["class"])
        result = validate_config(cls.config_type(), config[section].get("config", {}))
        assert result.success, (section, result.errors)
    result = validate_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert result.success, result.errors
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {
        "env": "DAGSTER_PG_PASSWORD"
    }


def test_a_broken_instance_is_rejected(tmp_path: Path) -> None:
    broken = _instance()
    broken["run_coordinator"]["config"]["tag_concurency_limits"] = []
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    config, _ = dagster_instance_config(str(tmp_path))
    cls = class_from_code_pointer(
        config["run_coordinator"]["module"], config["run_coordinator"]["class"]
    )
    assert not validate_config(cls.config_type(), config["run_coordinator"]["config"]).success


def test_helm_values_and_instance_yaml_describe_one_instance() -> None:
    values, instance = _values(), _instance()
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = instance["run_coordinator"]["config"]
    assert queued["tagConcurrencyLimits"] == coordinator["tag_concurrency_limits"]
    assert queued["maxConcurrentRuns"] == coordinator["max_concurrent_runs"]
    keys = {limit["key"] for limit in coordinator["tag_concurrency_limits"]}
    assert {"asr/tenant", "dagster/partition"} <= keys
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = instance["run_launcher"]["config"]
    assert chart["jobNamespace"] == launcher["job_namespace"]
    assert chart["envVars"] == launcher["env_vars"]
    assert [m["name"] for m in chart["envConfigMaps"]] == launcher["env_config_maps"]
    chart_pod = pod_manifest(
        {
            "container_config": chart["runK8sConfig"]["containerConfig"],
            "pod_spec_config": chart["runK8sConfig"]["podSpecConfig"],
        }
    )
    instance_pod = pod_manifest(
        {
            "container_config": launcher["run_k8s_config"]["container_config"],
            "pod_spec_config": {
                **launcher["run_k8s_config"]["pod_spec_config"],
                "service_account_name": launcher["service_account_name"],
            },
        }
    )
    assert chart_pod == instance_pod
