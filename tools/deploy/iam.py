"""Least-privilege IAM as code: render deploy/iam for one environment, and check it.

Policy documents under deploy/iam are templates with `${name}` placeholders filled from
deploy/iam/environments.json (account, region, buckets, key id, workgroup); an unresolved
placeholder is an error, never an empty string. `roles.json` maps each IRSA role to its
Kubernetes service account and policies; the trust policy is generated from it (the cluster's
OIDC provider, `sts:AssumeRoleWithWebIdentity`, audience `sts.amazonaws.com`, exactly that
service account as subject).

`python -m tools.deploy.iam production OUT_DIR` writes the rendered documents for Terraform or
the AWS CLI, and `cloudformation.json` holding all of them (what checkov scans).
"""

import json
import string
import sys
from pathlib import Path
from typing import Any

IAM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "iam"


class UnresolvedPlaceholderError(ValueError):
    """A policy template names a value the environment does not define."""


def environments(iam_dir: Path = IAM_DIR) -> dict[str, dict[str, str]]:
    return json.loads((iam_dir / "environments.json").read_text())


def roles(iam_dir: Path = IAM_DIR) -> dict[str, dict[str, Any]]:
    return json.loads((iam_dir / "roles.json").read_text())


def render_document(template: str, values: dict[str, str]) -> dict[str, Any]:
    try:
        text = string.Template(template).substitute(values)
    except KeyError as exc:
        raise UnresolvedPlaceholderError(f"no value for ${{{exc.args[0]}}}") from None
    return json.loads(text)


def trust_policy(values: dict[str, str], service_account: str) -> dict[str, Any]:
    namespace, name = service_account.split("/")
    provider = values["oidc_provider"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ServiceAccountOnly",
                "Effect": "Allow",
                "Principal": {
                    "Federated": f"arn:aws:iam::{values['account_id']}:oidc-provider/{provider}"
                },
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{provider}:sub": f"system:serviceaccount:{namespace}:{name}",
                        f"{provider}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def render_environment(environment: str, iam_dir: Path = IAM_DIR) -> dict[str, dict[str, Any]]:
    """Every document for one environment, keyed by its path relative to deploy/iam."""
    values = environments(iam_dir)[environment]
    rendered: dict[str, dict[str, Any]] = {}
    for path in sorted(iam_dir.rglob("*.json")):
        relative = path.relative_to(iam_dir).as_posix()
        if relative in ("environments.json", "roles.json"):
            continue
        rendered[relative] = render_document(path.read_text(), values)
    for role, spec in roles(iam_dir).items():
        rendered[f"trust/{role}.json"] = trust_policy(values, spec["service_account"])
    return rendered


def _logical_id(name: str) -> str:
    return "".join(
        part.capitalize() for part in name.replace(".json", "").replace("_", "-").split("-")
    )


def cloudformation(environment: str, iam_dir: Path = IAM_DIR) -> dict[str, Any]:
    """The environment's IAM, bucket policies and key as one CloudFormation template.

    It is what checkov's CloudFormation checks read (wildcards, privilege escalation, data
    exfiltration, key rotation), and a deployable form of the same documents.
    """
    values = environments(iam_dir)[environment]
    rendered = render_environment(environment, iam_dir)
    resources: dict[str, Any] = {
        "PlatformKey": {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "Description": "SSE-KMS for the asr-platform buckets",
                "EnableKeyRotation": True,
                "KeyPolicy": rendered["kms-key-policy.json"],
            },
        }
    }
    for relative, document in rendered.items():
        if relative.startswith("policies/"):
            resources[f"Policy{_logical_id(relative.split('/')[1])}"] = {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {"PolicyDocument": document},
            }
        elif relative.startswith("bucket-policies/"):
            bucket_key = relative.split("/")[1].replace(".json", "").replace("-", "_")
            resources[f"BucketPolicy{_logical_id(relative.split('/')[1])}"] = {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {"Bucket": values[bucket_key], "PolicyDocument": document},
            }
    for role, spec in roles(iam_dir).items():
        resources[f"Role{_logical_id(role)}"] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": role,
                "AssumeRolePolicyDocument": rendered[f"trust/{role}.json"],
                "ManagedPolicyArns": [
                    {"Ref": f"Policy{_logical_id(name)}"} for name in spec["policies"]
                ],
            },
        }
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def denies_insecure_transport(policy: dict[str, Any]) -> bool:
    return any(
        s.get("Effect") == "Deny"
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in _statements(policy)
    )


def key_policy_violations(policy: dict[str, Any], account_id: str) -> list[str]:
    """A key policy's Resource is always `*` (this key); what must be narrow is who and what.

    Only the account root may hold `kms:*` (AWS's recovery path); every other statement names
    role principals of this account, lists actions, and data-plane use is only through S3.
    """
    found: list[str] = []
    root = f"arn:aws:iam::{account_id}:root"
    for index, statement in enumerate(_statements(policy)):
        sid = statement.get("Sid", f"#{index}")
        if statement.get("Effect") != "Allow":
            continue
        principals = statement.get("Principal", {})
        aws = principals.get("AWS") if isinstance(principals, dict) else principals
        aws_list = aws if isinstance(aws, list) else [aws]
        actions = statement.get("Action")
        action_list = actions if isinstance(actions, list) else [actions]
        if any(a == "*" or str(a).endswith(":*") for a in action_list) and aws_list != [root]:
            found.append(f"{sid}: wildcard action for {aws_list}")
        for principal in aws_list:
            if principal == "*" or not str(principal).startswith(f"arn:aws:iam::{account_id}:"):
                found.append(f"{sid}: principal {principal!r} outside the account")
        uses_data = {"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"} & set(action_list)
        if uses_data and "kms:ViaService" not in statement.get("Condition", {}).get(
            "StringEquals", {}
        ):
            found.append(f"{sid}: data-key use not restricted to a service (kms:ViaService)")
    return found


def main(argv: list[str]) -> int:
    environment, out = argv[0], Path(argv[1])
    for relative, document in render_environment(environment).items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2) + "\n")
    (out / "cloudformation.json").write_text(
        json.dumps(cloudformation(environment), indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
