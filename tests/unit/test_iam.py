"""deploy/iam: one least-privilege policy per component, encryption with KMS, TLS only."""

import copy
import json

import pytest

from tools.deploy.iam import (
    UnresolvedPlaceholderError,
    denies_insecure_transport,
    environments,
    key_policy_violations,
    render_document,
    render_environment,
    roles,
)
from tools.deploy.policy import iam_violations

ENVIRONMENTS = ["staging", "production"]
COMPONENTS = {
    "code-location.json",
    "jobs-api.json",
    "triton-model-reader.json",
    "appsync-publisher.json",
    "dagster-control-plane.json",
}


def _identity_policies(environment: str) -> dict[str, dict]:
    return {
        k.removeprefix("policies/"): v
        for k, v in render_environment(environment).items()
        if k.startswith("policies/")
    }


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_document_renders_with_no_placeholder_left(environment: str) -> None:
    rendered = render_environment(environment)
    text = json.dumps(rendered)
    assert "${" not in text
    assert environments()[environment]["account_id"] in text
    assert set(_identity_policies(environment)) == COMPONENTS


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_identity_policies_are_least_privilege_and_deny_plain_http(environment: str) -> None:
    for name, policy in _identity_policies(environment).items():
        assert iam_violations(policy) == [], name
        assert denies_insecure_transport(policy), name
        for statement in policy["Statement"]:
            if statement["Effect"] == "Allow":
                resources = statement["Resource"]
                resources = resources if isinstance(resources, list) else [resources]
                assert all(r.startswith("arn:aws:") for r in resources), (name, resources)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_buckets_require_tls_and_sse_kms_with_our_key(environment: str) -> None:
    rendered = render_environment(environment)
    values = environments()[environment]
    key_arn = f"arn:aws:kms:{values['region']}:{values['account_id']}:key/{values['kms_key_id']}"
    buckets = {k: v for k, v in rendered.items() if k.startswith("bucket-policies/")}
    assert len(buckets) == 4
    for name, policy in buckets.items():
        assert denies_insecure_transport(policy), name
        assert all(s["Effect"] == "Deny" for s in policy["Statement"]), name
        conditions = json.dumps([s.get("Condition") for s in policy["Statement"]])
        assert '"s3:x-amz-server-side-encryption": "aws:kms"' in conditions
        assert key_arn in conditions
    rule = rendered["bucket-encryption.json"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": key_arn,
    }
    assert rule["BucketKeyEnabled"] is True


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_key_policy_grants_each_role_only_what_it_uses(environment: str) -> None:
    rendered = render_environment(environment)
    account = environments()[environment]["account_id"]
    policy = rendered["kms-key-policy.json"]
    assert key_policy_violations(policy, account) == []
    granted = {
        principal.rsplit("/", 1)[-1]
        for s in policy["Statement"]
        if s["Sid"] in ("EncryptThroughS3", "DecryptThroughS3")
        for principal in s["Principal"]["AWS"]
    }
    assert granted == set(roles())


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_trust_policies_admit_exactly_one_service_account(environment: str) -> None:
    rendered = render_environment(environment)
    for role, spec in roles().items():
        (statement,) = rendered[f"trust/{role}.json"]["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        (condition,) = statement["Condition"].values()
        namespace, name = spec["service_account"].split("/")
        assert f"system:serviceaccount:{namespace}:{name}" in condition.values()
        assert "sts.amazonaws.com" in condition.values()


def test_wildcards_are_rejected() -> None:
    policy = copy.deepcopy(_identity_policies("production")["triton-model-reader.json"])
    policy["Statement"][0]["Action"] = ["s3:*"]
    policy["Statement"][1]["Resource"] = "*"
    violations = iam_violations(policy)
    assert any("wildcard action 's3:*'" in v for v in violations)
    assert any("resource '*'" in v for v in violations)
    bucket_wide = {
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}]
    }
    assert iam_violations(bucket_wide)
    not_action = {
        "Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::b/p/*"}]
    }
    assert iam_violations(not_action)


def test_a_widened_key_policy_is_rejected() -> None:
    account = environments()["production"]["account_id"]
    policy = copy.deepcopy(render_environment("production")["kms-key-policy.json"])
    policy["Statement"][2]["Action"] = "kms:*"
    policy["Statement"][3]["Condition"] = {}
    policy["Statement"][3]["Principal"]["AWS"].append("*")
    violations = key_policy_violations(policy, account)
    assert any("wildcard action" in v for v in violations)
    assert any("kms:ViaService" in v for v in violations)
    assert any("outside the account" in v for v in violations)


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(UnresolvedPlaceholderError, match="kms_key_id"):
        render_document('{"Resource": "arn:aws:kms:r:a:key/${kms_key_id}"}', {})
