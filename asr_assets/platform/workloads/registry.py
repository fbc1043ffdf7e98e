"""The workload registry: loads `workload.yaml` files from folders and resolves `name:version`.

`letter-scoring:1` means the newest 1.x.y, `letter-scoring:1.2` the newest 1.2.y, and
`letter-scoring:1.2.3` exactly that one. Loading refuses the whole registry when any manifest is
invalid or two manifests claim the same `name:version`, naming every offending file: a
half-loaded registry would silently run an older version.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from asr_assets.platform.workloads.models import ManifestError, WorkloadManifest

MANIFEST_FILE = "workload.yaml"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_WORKLOAD_DIR = REPO_ROOT / "workloads"
#: Extra folders (os.pathsep-separated) searched after the repository's `workloads/`.
WORKLOAD_DIRS_VARIABLE = "ASR_WORKLOAD_DIRS"


class RegistryError(ValueError):
    """The registry cannot be loaded; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class UnknownWorkloadError(LookupError):
    """No registered workload matches the reference."""


def load_manifest(path: Path) -> WorkloadManifest:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a mapping at the top level")
    raw.pop("folder", None)
    try:
        return WorkloadManifest.model_validate({**raw, "folder": str(path.parent.resolve())})
    except ValidationError as exc:
        details = ", ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '<root>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ManifestError(f"{path}: invalid workload manifest ({details})") from None


def manifest_paths(folder: Path) -> list[Path]:
    """`folder/workload.yaml` and `folder/*/workload.yaml`, in a stable order."""
    if not folder.is_dir():
        return []
    own = folder / MANIFEST_FILE
    if own.is_file():
        return [own]
    return sorted(p for p in folder.glob(f"*/{MANIFEST_FILE}") if p.is_file())


class WorkloadRegistry:
    def __init__(self, manifests: Iterable[WorkloadManifest]) -> None:
        self._by_name: dict[str, list[WorkloadManifest]] = {}
        for manifest in manifests:
            self._by_name.setdefault(manifest.name, []).append(manifest)
        for versions in self._by_name.values():
            versions.sort(key=lambda m: m.version_tuple)

    @classmethod
    def from_folders(cls, folders: Iterable[Path | str]) -> WorkloadRegistry:
        problems: list[str] = []
        loaded: dict[str, WorkloadManifest] = {}
        sources: dict[str, Path] = {}
        for folder in folders:
            for path in manifest_paths(Path(folder)):
                try:
                    manifest = load_manifest(path)
                except ManifestError as exc:
                    problems.append(str(exc))
                    continue
                if manifest.ref in loaded:
                    problems.append(
                        f"duplicate workload {manifest.ref}: {sources[manifest.ref]} and {path}"
                    )
                    continue
                loaded[manifest.ref] = manifest
                sources[manifest.ref] = path
        if problems:
            raise RegistryError(problems)
        return cls(loaded.values())

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> WorkloadRegistry:
        return cls.from_folders(registry_folders(environ))

    def all(self) -> list[WorkloadManifest]:
        return [m for name in sorted(self._by_name) for m in self._by_name[name]]

    def resolve(self, reference: str) -> WorkloadManifest:
        """The newest registered version matching `name`, `name:1`, `name:1.2` or `name:1.2.3`."""
        name, _, wanted = reference.partition(":")
        versions = self._by_name.get(name.strip())
        if not versions:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownWorkloadError(f"no workload named {name!r} (registered: {known})")
        parts = wanted.strip().split(".") if wanted.strip() else []
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise UnknownWorkloadError(f"{reference!r}: version must be N, N.N or N.N.N")
        prefix = tuple(int(p) for p in parts)
        matching = [m for m in versions if m.version_tuple[: len(prefix)] == prefix]
        if not matching:
            have = ", ".join(m.version for m in versions)
            raise UnknownWorkloadError(f"no version of {name} matches {reference!r} (have {have})")
        return matching[-1]


def registry_folders(environ: Mapping[str, str] | None = None) -> list[Path]:
    environ = os.environ if environ is None else environ
    extra = [Path(p) for p in environ.get(WORKLOAD_DIRS_VARIABLE, "").split(os.pathsep) if p]
    return [DEFAULT_WORKLOAD_DIR, *extra]
