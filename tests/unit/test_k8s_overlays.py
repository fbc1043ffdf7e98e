"""deploy/k8s: every overlay rendered offline, every manifest validated against the Kubernetes
schemas, every pod checked against our hardening policy, and the references between manifests
(and to deploy/iam) resolved. Broken copies show that each check really fails."""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tools.deploy.iam import environments, roles
from tools.deploy.policy import manifest_violations, pod_spec_of
from tools.deploy.render import UnsupportedKustomization, render, strategic_merge

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
ENVIRONMENTS = ["staging", "production"]
VERSIONS = ["1.30", kubernetes_validate.latest_version()]
# Custom resources (cert-manager, trust-manager) have no schema in kubernetes-validate: their
# fields are asserted below instead.
CUSTOM_KINDS = {"Certificate", "Bundle"}
# Secrets created outside these manifests: cert-manager (TLS), the platform team (database).
EXTERNAL_SECRETS = {"triton-asr-tls", "asr-jobs-api-tls", "asr-jobs-api-db"}
PLATFORM_NAMESPACES = {"asr-dagster", "asr-api", "asr-inference"}


def _rendered(environment: str) -> list[dict]:
    return render(OVERLAYS / environment)


def _index(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_rendered_manifest_is_valid_kubernetes(environment: str, version: str) -> None:
    errors = []
    for doc in _rendered(environment):
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert errors == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_pod_is_hardened(environment: str) -> None:
    docs = _rendered(environment)
    pods = [d for d in docs if pod_spec_of(d) is not None]
    assert {d["metadata"]["name"] for d in pods} == {"triton-asr", "asr-jobs-api"}
    assert [v for d in docs for v in manifest_violations(d)] == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_namespaces_are_restricted_and_closed_by_default(environment: str) -> None:
    docs = _rendered(environment)
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    assert set(namespaces) == PLATFORM_NAMESPACES
    for namespace in namespaces.values():
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    used = {d["metadata"].get("namespace") for d in docs} - {None}
    assert used == PLATFORM_NAMESPACES
    for name in PLATFORM_NAMESPACES:
        deny = [
            d
            for d in docs
            if d["kind"] == "NetworkPolicy"
            and d["metadata"]["namespace"] == name
            and d["metadata"]["name"] == "default-deny-all"
        ]
        assert len(deny) == 1
        assert deny[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_network_policies_open_only_the_data_flow(environment: str) -> None:
    policies = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in _rendered(environment)
        if d["kind"] == "NetworkPolicy"
    }
    triton = policies[("asr-inference", "triton-ingress")]["spec"]["ingress"]
    ports = {rule["ports"][0]["port"]: rule["from"] for rule in triton}
    assert set(ports) == {8001, 8002}  # gRPC (TLS) and metrics; never plain HTTP 8000
    assert ports[8001][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "asr-dagster"
    }
    api = policies[("asr-api", "jobs-api-ingress")]["spec"]["ingress"]
    assert [rule["from"][0]["namespaceSelector"]["matchLabels"] for rule in api] == [
        {"kubernetes.io/metadata.name": "ingress-nginx"}
    ]
    for (_, _), policy in policies.items():
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if block and block["cidr"] == "0.0.0.0/0":
                    assert block["except"] == ["169.254.169.254/32"]  # no instance metadata
                    assert [p["port"] for p in rule["ports"]] == [443]


def _references(node: object) -> tuple[set[str], set[str]]:
    """ConfigMaps and Secrets a pod spec names (env, envFrom, volumes)."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("configMapKeyRef", "configMapRef", "configMap"):
                config_maps.add(value["name"])
            elif key in ("secretKeyRef", "secretRef"):
                secrets.add(value["name"])
            elif key == "secret":
                secrets.add(value["secretName"])
            else:
                found = _references(value)
                config_maps |= found[0]
                secrets |= found[1]
    elif isinstance(node, list):
        for item in node:
            found = _references(item)
            config_maps |= found[0]
            secrets |= found[1]
    return config_maps, secrets


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_references_resolve(environment: str) -> None:
    docs = _rendered(environment)
    index = _index(docs)
    names = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    priority_classes = {d["metadata"]["name"] for d in docs if d["kind"] == "PriorityClass"}
    for doc in docs:
        pod = pod_spec_of(doc)
        if pod is None:
            continue
        namespace = doc["metadata"]["namespace"]
        assert ("ServiceAccount", namespace, pod["serviceAccountName"]) in names
        assert pod["priorityClassName"] in priority_classes
        config_maps, secrets = _references(pod)
        assert config_maps and all(("ConfigMap", namespace, c) in names for c in config_maps)
        assert secrets and secrets <= EXTERNAL_SECRETS
    for doc in docs:
        if doc["kind"] in ("HorizontalPodAutoscaler",):
            target = doc["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) in index
        if doc["kind"] == "Ingress":
            hosts = {h for tls in doc["spec"]["tls"] for h in tls["hosts"]}
            assert {rule["host"] for rule in doc["spec"]["rules"]} <= hosts  # TLS for every host
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert ("Service", path["backend"]["service"]["name"]) in index
    batch_tiers = {p for p in priority_classes if p.startswith("asr-batch-")}
    quota_scopes = {
        value
        for d in docs
        if d["kind"] == "ResourceQuota"
        for expression in d["spec"]["scopeSelector"]["matchExpressions"]
        for value in expression["values"]
    }
    assert quota_scopes == batch_tiers


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_service_accounts_assume_the_iam_roles_of_their_environment(environment: str) -> None:
    account = environments()[environment]["account_id"]
    by_service_account = {spec["service_account"]: role for role, spec in roles().items()}
    for doc in _rendered(environment):
        if doc["kind"] != "ServiceAccount":
            continue
        arn = doc["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        key = f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"
        assert arn == f"arn:aws:iam::{account}:role/{by_service_account[key]}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_triton_serves_a_pinned_repository_over_tls_on_gpus(environment: str) -> None:
    index = _index(_rendered(environment))
    pins = index[("ConfigMap", "triton-model-repository")]["data"]
    assert re.fullmatch(r"[0-9a-f]{64}", pins["sha256"])
    bucket = environments()[environment]["models_bucket"]
    assert pins["source"] == f"s3://{bucket}/triton"
    pod = index[("Deployment", "triton-asr")]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--grpc-use-ssl=true" in args and "--model-repository=/models/repository" in args
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    certificate = index[("Certificate", "triton-asr-tls")]["spec"]
    assert certificate["secretName"] == "triton-asr-tls"
    assert "triton-asr.asr-inference.svc.cluster.local" in certificate["dnsNames"]
    code_env = index[("ConfigMap", "asr-code-location-env")]["data"]
    assert code_env["ASR_TRITON_URL"].startswith("triton-asr.asr-inference.svc.cluster.local:")
    assert code_env["ASR_TRITON_URL"].endswith(":8001")
    bundle = index[("Bundle", "asr-triton-ca")]["spec"]
    assert bundle["target"]["configMap"]["key"] == "ca.crt"
    assert code_env["ASR_TRITON_TLS_CA"].endswith("/ca.crt")


def test_overlays_differ_where_environments_do() -> None:
    staging, production = (_index(_rendered(e)) for e in ENVIRONMENTS)
    staging_text = yaml.safe_dump(list(staging.values()))
    assert "111122223333:role" not in staging_text  # no production role in staging
    assert (
        staging[("HorizontalPodAutoscaler", "triton-asr")]["spec"]["maxReplicas"]
        < (production[("HorizontalPodAutoscaler", "triton-asr")]["spec"]["maxReplicas"])
    )
    for index, environment in zip((staging, production), ENVIRONMENTS, strict=True):
        for doc in index.values():
            assert doc["metadata"]["labels"]["asr-platform/environment"] == environment


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda c, p: c["securityContext"].update(runAsUser=0), "uid 0"),
        (lambda c, p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda c, p: c["resources"].pop("limits"), "no memory limits"),
        (lambda c, p: c["securityContext"].update(readOnlyRootFilesystem=False), "writable"),
        (lambda c, p: c["securityContext"]["capabilities"].update(drop=[]), "capabilities"),
        (lambda c, p: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]), "adds"),
        (lambda c, p: c.update(image="python:latest"), "not pinned"),
        (lambda c, p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda c, p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    ],
    ids=[
        "root",
        "non-root-unset",
        "no-limits",
        "writable-fs",
        "caps-kept",
        "caps-added",
        "latest",
        "host-net",
        "host-path",
    ],
)
def test_a_broken_manifest_fails_the_policy(breakage, expected: str) -> None:
    deployment = copy.deepcopy(_index(_rendered("production"))[("Deployment", "asr-jobs-api")])
    pod = deployment["spec"]["template"]["spec"]
    breakage(pod["containers"][0], pod)
    violations = manifest_violations(deployment)
    assert any(expected in v for v in violations), violations


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nhelmCharts: []\n")
    with pytest.raises(UnsupportedKustomization, match="helmCharts"):
        render(tmp_path)
    merged = strategic_merge(
        {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]},
        {"containers": [{"name": "b", "image": "y:2"}]},
    )
    assert merged == {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}]}


def test_jobs_api_submits_to_the_production_instance() -> None:
    index = _index(_rendered("production"))
    instance = index[("ConfigMap", "asr-dagster-instance")]["data"]["dagster.yaml"]
    assert yaml.safe_load(instance) == yaml.safe_load(
        (ROOT / "deploy" / "dagster" / "dagster.yaml").read_text()
    )
    container = index[("Deployment", "asr-jobs-api")]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["asr_assets.platform.platform_cli", "serve"]
    env = index[("ConfigMap", "asr-jobs-api-env")]["data"]
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_jobs_api_environment_builds_the_aws_resources(environment: str) -> None:
    """The API counts a job's inputs with the aws environment's store: its ConfigMap must
    satisfy asr_assets.definitions.aws_resources (no secrets involved)."""
    from asr_assets.definitions import aws_resources

    env = _index(_rendered(environment))[("ConfigMap", "asr-jobs-api-env")]["data"]
    model_dir = str(ROOT / "models" / "demo-letters")
    resources = aws_resources({**env, "ASR_MODEL_DIR": model_dir})
    assert resources["store"].bucket == environments()[environment]["data_bucket"]
