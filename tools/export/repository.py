"""The Triton model repository: `<repo>/<model>/config.pbtxt` and numbered version directories.

The config is built as Triton's own `ModelConfig` protobuf (shipped with tritonclient) and
rendered with protobuf's text format, so it is valid by construction and tests can parse it back
instead of grepping strings.

Dynamic batching only merges requests whose shapes agree, which is why clients pad audio to a few
bucket lengths (`asr_assets.core.batching.bucket_length`); the queue policy rejects requests that
waited longer than the timeout rather than letting a backlog grow without bound.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_assets.inference.onnx import (
    INPUT_LENGTHS,
    INPUT_VALUES,
    ONNX_FILE,
    OUTPUT_LENGTHS,
    OUTPUT_LOG_PROBS,
    OnnxModelSpec,
)

CONFIG_FILE = "config.pbtxt"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class TritonModelSettings:
    """Serving knobs of the production model; defaults suit one mid-size GPU per pod."""

    model_name: str
    max_batch_size: int = 32
    preferred_batch_sizes: Sequence[int] = (8, 16, 32)
    max_queue_delay_us: int = 5_000
    queue_timeout_s: float = 30.0
    max_queue_size: int = 256
    instance_count: int = 1
    gpus: Sequence[int] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _MODEL_NAME.fullmatch(self.model_name):
            raise ValueError(f"invalid Triton model name {self.model_name!r}")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
        if too_big or any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError(
                f"preferred batch sizes {list(self.preferred_batch_sizes)} must lie in "
                f"1..{self.max_batch_size}"
            )
        if self.queue_timeout_s <= 0 or self.max_queue_delay_us < 0:
            raise ValueError("queue timeout must be positive and queue delay non-negative")


@dataclass(frozen=True)
class RepositoryEntry:
    """Where one exported version landed."""

    model_root: Path
    config_path: Path
    version: int
    model_path: Path


def _pb2() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def build_model_config(spec: OnnxModelSpec, settings: TritonModelSettings) -> Any:
    """The production `ModelConfig`: onnxruntime backend on GPUs with dynamic batching."""
    pb = _pb2()
    config = pb.ModelConfig(
        name=settings.model_name,
        backend="onnxruntime",
        max_batch_size=settings.max_batch_size,
        default_model_filename=ONNX_FILE,
    )
    config.version_policy.latest.num_versions = 1
    config.input.append(pb.ModelInput(name=INPUT_VALUES, data_type=pb.TYPE_FP32, dims=[-1]))
    config.input.append(pb.ModelInput(name=INPUT_LENGTHS, data_type=pb.TYPE_INT64, dims=[1]))
    config.output.append(
        pb.ModelOutput(name=OUTPUT_LOG_PROBS, data_type=pb.TYPE_FP32, dims=[-1, spec.vocab_size])
    )
    config.output.append(pb.ModelOutput(name=OUTPUT_LENGTHS, data_type=pb.TYPE_INT64, dims=[1]))
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
    batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    policy = batching.default_queue_policy
    policy.timeout_action = pb.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = int(settings.queue_timeout_s * 1_000_000)
    # Clients send their own per-request deadline; the server drops work nobody waits for.
    policy.allow_timeout_override = True
    policy.max_queue_size = settings.max_queue_size
    group = config.instance_group.add()
    group.kind = pb.ModelInstanceGroup.KIND_GPU
    group.count = settings.instance_count
    group.gpus.extend(settings.gpus)
    for key, value in spec.metadata().items():
        config.parameters[key].string_value = value
    return config


def render_config(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_config(text: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, _pb2().ModelConfig())


def read_config(model_root: Path) -> Any:
    return parse_config((model_root / CONFIG_FILE).read_text())


def config_parameters(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def next_version(model_root: Path) -> int:
    """One more than the highest numbered version directory (Triton serves the latest)."""
    versions = (
        [
            int(child.name)
            for child in model_root.iterdir()
            if child.is_dir() and child.name.isdigit()
        ]
        if model_root.is_dir()
        else []
    )
    return max(versions, default=0) + 1


def write_model_repository(
    spec: OnnxModelSpec,
    repository: Path,
    settings: TritonModelSettings,
    *,
    version: int | None = None,
) -> RepositoryEntry:
    """Copy an exported (and checked) graph in as a new version and rewrite the config.

    The version directory is filled before the config names the new checksum, and Triton's
    `latest` policy only sees a directory once it holds `model.onnx`, so a poll-mode server never
    loads a half-written version.
    """
    model_root = repository / settings.model_name
    model_root.mkdir(parents=True, exist_ok=True)
    chosen = version if version is not None else next_version(model_root)
    if chosen < 1:
        raise ValueError("Triton versions are positive integers")
    version_dir = model_root / str(chosen)
    if version_dir.exists():
        raise FileExistsError(f"{version_dir} exists; versions are immutable, pick a new number")
    staging = model_root / f".staging-{chosen}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    shutil.copyfile(spec.path, staging / ONNX_FILE)
    staging.replace(version_dir)
    config_path = model_root / CONFIG_FILE
    staged_config = model_root / f".{CONFIG_FILE}.tmp"
    staged_config.write_text(render_config(build_model_config(spec, settings)))
    staged_config.replace(config_path)
    return RepositoryEntry(model_root, config_path, chosen, version_dir / ONNX_FILE)


def python_backend_variant(
    production: Any, *, extra_parameters: Mapping[str, str] | None = None
) -> Any:
    """The same model (name, inputs, outputs, batching, parameters) on Triton's python backend.

    For Triton builds without the onnxruntime backend or GPUs, such as the one in the
    nvidia-pytriton wheel the tests start: a `model.py` runs ONNX Runtime on the CPU instead.
    """
    pb = _pb2()
    variant = pb.ModelConfig()
    variant.CopyFrom(production)
    variant.backend = "python"
    variant.default_model_filename = "model.py"
    del variant.instance_group[:]
    group = variant.instance_group.add()
    group.kind = pb.ModelInstanceGroup.KIND_CPU
    group.count = 1
    for key, value in (extra_parameters or {}).items():
        variant.parameters[key].string_value = value
    return variant
