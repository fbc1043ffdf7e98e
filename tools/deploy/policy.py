"""Our own policy rules for what we deploy, as functions that return violations.

kubernetes-validate proves a manifest is well-formed; these rules prove it is hardened: every
container non-root, read-only root filesystem, no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp, CPU and memory requests and limits, and an image pinned by digest or
version. IAM documents get the least-privilege rule (no `*` action or resource in an Allow) and
Dockerfiles the image rules. Each function returns a list of human-readable violations, empty
when compliant, so a test can both assert "none" on our files and "this one" on a broken copy.
"""

import io
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


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    return [(item["instruction"].upper(), item["value"].strip()) for item in parser.structure]


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value
    )


def dockerfile_violations(text: str) -> list[str]:
    """Hardening rules for our images.

    Multi-stage; every external base pinned by digest or version; the lock file copied and
    installed before any source; the final stage runs as a non-root user, has a HEALTHCHECK,
    no RUN (it needs no shell: a distroless base has none) and exec-form ENTRYPOINT/CMD; no ADD
    of remote URLs; no compiler toolchain installed in the final stage.
    """
    found: list[str] = []
    instructions = _dockerfile_instructions(text)
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for instruction, value in instructions:
        if instruction == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif instruction == "FROM":
            parts = _expand(value, args).split()
            image = next(p for p in parts if not p.startswith("--"))
            alias = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "body": []})
        elif stages:
            stages[-1]["body"].append((instruction, value))
    if len(stages) < 2:
        found.append("not a multi-stage build")
    aliases = {stage["alias"] for stage in stages if stage["alias"]}
    for stage in stages:
        if stage["image"] not in aliases and not image_is_pinned(stage["image"]):
            found.append(f"base image {stage['image']!r} is not pinned by digest or version")
    body = [item for stage in stages for item in stage["body"]]
    copies = [value for instruction, value in body if instruction == "COPY"]
    lock_at = next((i for i, v in enumerate(copies) if "requirements.lock" in v), None)
    source_at = next((i for i, v in enumerate(copies) if "asr_assets" in v), None)
    if lock_at is None:
        found.append("requirements.lock is never copied (dependencies not from the lock)")
    elif source_at is not None and source_at < lock_at:
        found.append("source is copied before the dependency layer")
    for instruction, value in body:
        if instruction == "ADD" and re.search(r"\bhttps?://", value):
            found.append(f"ADD of a remote URL: {value!r}")
    if not stages:
        return found
    final = stages[-1]["body"]
    users = [value for instruction, value in final if instruction == "USER"]
    if not users:
        found.append("final stage sets no USER (runs as root)")
    elif users[-1].split(":")[0] in ("root", "0"):
        found.append(f"final stage runs as {users[-1]!r}")
    health = [value for instruction, value in final if instruction == "HEALTHCHECK"]
    if not health or health[-1].upper().startswith("NONE"):
        found.append("final stage has no HEALTHCHECK")
    if any(instruction == "RUN" for instruction, _ in final):
        found.append("final stage has RUN (needs a shell at run time)")
    for instruction, value in final:
        if instruction in ("ENTRYPOINT", "CMD") and not value.startswith("["):
            found.append(f"{instruction} is in shell form: {value!r}")
        if instruction == "RUN" and re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", value):
            found.append(f"compiler installed in the final stage: {value!r}")
    return found
