"""Workloads: the manifest contract, the registry, and the shipped workloads' entry points."""

from asr_assets.platform.workloads.models import ManifestError, WorkloadManifest
from asr_assets.platform.workloads.registry import (
    RegistryError,
    UnknownWorkloadError,
    WorkloadRegistry,
)

__all__ = [
    "ManifestError",
    "RegistryError",
    "UnknownWorkloadError",
    "WorkloadManifest",
    "WorkloadRegistry",
]
