"""Render our deployment sources offline: kustomize overlays and layered Helm values.

No kustomize or Helm binary exists where the tests run, so this implements exactly the subset of
kustomize that deploy/k8s uses — `resources` (files and directories), `namespace`, `labels`
(metadata only), `patches` (strategic-merge files; lists of named items merged by `name`),
`images` (newName / newTag / digest), `replicas` — and refuses every other field, so a
kustomization that needs more fails loudly here instead of rendering something else. CI on a
networked runner also renders with the real `kubectl kustomize` and validates that output.

`python -m tools.deploy.render deploy/k8s/overlays/production` prints the rendered stream;
`--out build/manifests` writes one file per overlay instead (what `make test` hands checkov).
"""

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "patches",
    "images",
    "replicas",
}
CLUSTER_SCOPED = {
    "Namespace",
    "PriorityClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "CustomResourceDefinition",
    "Bundle",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}


class UnsupportedKustomization(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def helm_merge(base: Any, overlay: Any) -> Any:
    """Helm's values layering: maps merge recursively, anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = helm_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(overlay)


def load_values(*paths: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        values = helm_merge(values, yaml.safe_load(path.read_text()) or {})
    return values


def strategic_merge(base: Any, patch: Any) -> Any:
    """The strategic-merge subset: maps recurse, lists of named maps merge item by `name`
    (an item with `$patch: delete` is removed), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        items = {item["name"]: item for item in base}
        order = [item["name"] for item in base]
        for item in patch:
            if item.get("$patch") == "delete":
                items.pop(item["name"], None)
                order.remove(item["name"])
            elif item["name"] in items:
                items[item["name"]] = strategic_merge(items[item["name"]], item)
            else:
                items[item["name"]] = copy.deepcopy(item)
                order.append(item["name"])
        return [items[name] for name in order]
    return copy.deepcopy(patch)


def _identity(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from tools.deploy.policy import pod_spec_of

    pod = pod_spec_of(doc) or {}
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def render(directory: Path) -> list[dict[str, Any]]:
    """Render the kustomization in `directory` to a list of manifests."""
    kustomization_path = directory / "kustomization.yaml"
    spec = yaml.safe_load(kustomization_path.read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise UnsupportedKustomization(
            f"{kustomization_path}: unsupported fields {sorted(unknown)}"
        )
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            docs.extend(render(target))
        else:
            docs.extend(_load_yaml_documents(target))
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        if key in seen:
            raise UnsupportedKustomization(f"{directory}: duplicate resource {key}")
        seen.add(key)
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise UnsupportedKustomization(f"{directory}: only file patches are supported")
        for patch in _load_yaml_documents(directory / patch_entry["path"]):
            matches = [i for i, doc in enumerate(docs) if _identity(doc) == _identity(patch)]
            if len(matches) != 1:
                raise UnsupportedKustomization(
                    f"{directory}: patch {_identity(patch)} matches {len(matches)} resources"
                )
            docs[matches[0]] = strategic_merge(docs[matches[0]], patch)
    namespace = spec.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = namespace
    for label_entry in spec.get("labels", []):
        if set(label_entry) - {"pairs"}:
            raise UnsupportedKustomization(f"{directory}: labels support `pairs` only")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_entry["pairs"])
    for replica in spec.get("replicas", []):
        for doc in docs:
            if doc["metadata"]["name"] == replica["name"] and "replicas" in doc.get("spec", {}):
                doc["spec"]["replicas"] = replica["count"]
    for image in spec.get("images", []):
        if set(image) - {"name", "newName", "newTag", "digest"}:
            raise UnsupportedKustomization(f"{directory}: unsupported image fields {image}")
        for doc in docs:
            for container in _containers(doc):
                repository, tag = _split_image(container["image"])
                if repository != image["name"]:
                    continue
                repository = image.get("newName", repository)
                if "digest" in image:
                    container["image"] = f"{repository}@{image['digest']}"
                else:
                    container["image"] = f"{repository}:{image.get('newTag', tag)}"
    return docs


def _split_image(image: str) -> tuple[str, str]:
    name, _, digest = image.partition("@")
    if digest:
        return name, digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, ""


def differences(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Where another renderer's output (the real kustomize, in CI) differs from ours."""

    def keyed(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        return {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs
        }

    mine, other = keyed(ours), keyed(theirs)
    found = [f"only in ours: {k}" for k in sorted(set(mine) - set(other))]
    found += [f"only in theirs: {k}" for k in sorted(set(other) - set(mine))]
    found += [f"differs: {k}" for k in sorted(set(mine) & set(other)) if mine[k] != other[k]]
    return found


def main(argv: list[str]) -> int:
    """Print each overlay's manifests, or with `--out DIR` write DIR/<overlay>.yaml, or with
    `--compare OVERLAY FILE` exit 1 if FILE (e.g. `kubectl kustomize` output) differs."""
    if argv[:1] == ["--compare"]:
        theirs = [d for d in yaml.safe_load_all(Path(argv[2]).read_text()) if d]
        found = differences(render(Path(argv[1])), theirs)
        sys.stdout.write("".join(f"{line}\n" for line in found))
        return 1 if found else 0
    out: Path | None = None
    if argv[:1] == ["--out"]:
        out, argv = Path(argv[1]), argv[2:]
        out.mkdir(parents=True, exist_ok=True)
    for directory in argv:
        text = yaml.safe_dump_all(render(Path(directory)), sort_keys=False)
        if out is None:
            sys.stdout.write(text)
        else:
            (out / f"{Path(directory).name}.yaml").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
