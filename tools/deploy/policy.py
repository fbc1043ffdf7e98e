"""Our own policy rules for what we deploy, as functions that return violations.

kubernetes-validate proves a manifest is well-formed; these rules prove it is hardened: every
container non-root, read-only root filesystem, no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp, CPU and memory requests and limits, and an image pinned by digest or
version. IAM documents get the least-privilege rule (no `*` action or resource in an Allow) and
Dockerfiles the image rules. Each function returns a list of human-readable violations, empty
when compliant, so a test can both assert "none" on our files and "this one" on a broken copy.
"""

import re
from collections.abc import Iterable
from typing import Any

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A tag that names a version: has a digit, and is not a moving alias.
_VERSION_TAG = re.compile(r":(?=[^/:]*\d)[\w.\-]+$")
_MOVING_TAGS = {"latest", "stable", "main", "master", "nightly", "edge"}

_POD_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def image_is_pinned(image: str) -> bool:
    if _DIGEST.search(image):
        return True
    match = _VERSION_TAG.search(image)
    return bool(match) and match.group(0)[1:] not in _MOVING_TAGS


def pod_spec_of(doc: dict[str, Any]) -> dict[str, Any] | None:
    path = _POD_PATHS.get(doc.get("kind", ""))
    if path is None:
        return None
    node: Any = doc
    for key in path:
        node = (node or {}).get(key)
    return node


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A container's security setting, falling back to the pod's (as the kubelet does)."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.get("securityContext") or {}).get(key)


def container_violations(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    name = container.get("name", "?")
    found: list[str] = []
    security = container.get("securityContext") or {}
    if _effective(pod, container, "runAsNonRoot") is not True:
        found.append(f"{name}: runAsNonRoot is not true")
    if _effective(pod, container, "runAsUser") in (0, "0"):
        found.append(f"{name}: runs as uid 0")
    if security.get("readOnlyRootFilesystem") is not True:
        found.append(f"{name}: root filesystem is writable")
    if security.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation is not false")
    if security.get("privileged"):
        found.append(f"{name}: privileged")
    capabilities = security.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"{name}: capabilities not dropped (drop: [ALL])")
    if capabilities.get("add"):
        found.append(f"{name}: adds capabilities {capabilities['add']}")
    seccomp = _effective(pod, container, "seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        found.append(f"{name}: no RuntimeDefault seccomp profile")
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(kind) or {}):
                found.append(f"{name}: no {resource} {kind}")
    image = container.get("image", "")
    if not image_is_pinned(image):
        found.append(f"{name}: image {image!r} is not pinned by digest or version")
    return found


def manifest_violations(doc: dict[str, Any]) -> list[str]:
    pod = pod_spec_of(doc)
    if pod is None:
        return []
    where = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
    found = [
        f"{where}: {v}"
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]
        for v in container_violations(pod, container)
    ]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(f"{where}: {flag}")
    if any("hostPath" in volume for volume in pod.get("volumes", [])):
        found.append(f"{where}: mounts a hostPath volume")
    return found


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def iam_violations(policy: dict[str, Any], allowed_star_actions: Iterable[str] = ()) -> list[str]:
    """Least privilege for Allow statements: no `*` / `service:*` action, no NotAction or
    NotResource, and no `*` resource unless every action in the statement is one AWS only
    authorizes on `*` (listed explicitly by the caller, e.g. `athena:ListWorkGroups`)."""
    star_ok = set(allowed_star_actions)
    found: list[str] = []
    for index, statement in enumerate(_as_list(policy.get("Statement"))):
        sid = statement.get("Sid", f"#{index}")
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            found.append(f"{sid}: Allow with NotAction/NotResource")
        actions = [str(a) for a in _as_list(statement.get("Action"))]
        found.extend(
            f"{sid}: wildcard action {a!r}" for a in actions if a == "*" or a.endswith(":*")
        )
        principal = statement.get("Principal")
        if principal in ("*", {"AWS": "*"}) and "Condition" not in statement:
            found.append(f"{sid}: any principal without a condition")
        resources = [str(r) for r in _as_list(statement.get("Resource"))]
        if "*" in resources and not (actions and set(actions) <= star_ok):
            found.append(f"{sid}: resource '*' for {actions}")
        found.extend(f"{sid}: bucket-wide wildcard {r!r}" for r in resources if r.endswith(":::*"))
    return found
