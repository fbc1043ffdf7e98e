"""ONNX: the export contract shared by the local ONNX Runtime engine and Triton, and that engine.

One graph serves both paths, so a phrase scored on Triton and the same phrase scored by the local
fallback come from the same arithmetic. The graph takes raw 16 kHz waveforms plus their lengths and
does the feature extractor's normalisation itself (zero mean, unit variance over the real samples,
zeros in the padding); clients therefore need no Hugging Face code, only numpy. It returns
log-probabilities and the number of real frames per clip, so no client has to know the
architecture's frame arithmetic to strip padding frames.

    input_values   float32 [batch, samples]   waveform, right-padded with anything
    input_lengths  int64   [batch, 1]         real samples per row
    log_probs      float32 [batch, frames, V] log-softmax over the vocabulary
    output_lengths int64   [batch, 1]         real frames per row

The model's identity (name, version, sha256 of SHA256SUMS) and its frame stride travel inside the
ONNX file as metadata, and every engine refuses a file whose hash differs from the verified model
directory's, so a stale export can never score under a newer model's name.

torch, transformers, onnx and onnxruntime are imported inside functions: importing this module is
free, which keeps the code location light.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asr_assets.core.audio import TARGET_SAMPLE_RATE
from asr_assets.core.models import ModelInfo
from asr_assets.inference.base import Emissions, InferenceError
from asr_assets.inference.memory import release_freed_memory, usable_cpus
from asr_assets.inference.model_dir import (
    ModelIntegrityError,
    model_info,
    read_vocabulary,
    verify_checksums,
)
from asr_assets.observability.logging import get_logger

log = get_logger(__name__)

INPUT_VALUES = "input_values"
INPUT_LENGTHS = "input_lengths"
OUTPUT_LOG_PROBS = "log_probs"
OUTPUT_LENGTHS = "output_lengths"
DEFAULT_OPSET = 17
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: Bumped whenever the exported graph changes for the same model, so that exports cached by an
#: older version are made again instead of reused. 2: 1-D convolutions run as 2-D ones.
EXPORT_FORMAT = 2
# HF Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm uses the same epsilon.
_NORM_EPSILON = 1e-7

META_MODEL_NAME = "asr_model_name"
META_MODEL_VERSION = "asr_model_version"
META_MODEL_SHA256 = "model_sha256"
META_FRAME_STRIDE = "frame_stride_samples"
META_SAMPLE_RATE = "sample_rate"
META_VOCAB_SIZE = "vocab_size"
META_QUANTIZATION = "quantization"


@dataclass(frozen=True)
class OnnxModelSpec:
    """What an exported graph is: the model it came from and how to read its outputs."""

    path: Path
    model: ModelInfo
    frame_stride_samples: int
    vocab_size: int
    sample_rate: int = TARGET_SAMPLE_RATE
    quantization: str = "none"

    @property
    def frame_duration_s(self) -> float:
        return self.frame_stride_samples / self.sample_rate

    def metadata(self) -> dict[str, str]:
        return {
            META_MODEL_NAME: self.model.name,
            META_MODEL_VERSION: self.model.version,
            META_MODEL_SHA256: self.model.sha256,
            META_FRAME_STRIDE: str(self.frame_stride_samples),
            META_SAMPLE_RATE: str(self.sample_rate),
            META_VOCAB_SIZE: str(self.vocab_size),
            META_QUANTIZATION: self.quantization,
        }

    @classmethod
    def from_metadata(cls, path: Path, metadata: dict[str, str]) -> OnnxModelSpec:
        missing = [
            key
            for key in (META_MODEL_SHA256, META_FRAME_STRIDE, META_VOCAB_SIZE)
            if key not in metadata
        ]
        if missing:
            raise ModelIntegrityError(f"{path} is not an asr-platform export (lacks {missing})")
        return cls(
            path=path,
            model=ModelInfo(
                name=metadata.get(META_MODEL_NAME, "unknown"),
                version=metadata.get(META_MODEL_VERSION, "unknown"),
                sha256=metadata[META_MODEL_SHA256],
            ),
            frame_stride_samples=int(metadata[META_FRAME_STRIDE]),
            vocab_size=int(metadata[META_VOCAB_SIZE]),
            sample_rate=int(metadata.get(META_SAMPLE_RATE, TARGET_SAMPLE_RATE)),
            quantization=metadata.get(META_QUANTIZATION, "none"),
        )


def _waveform_ctc_module(network: Any, normalize: bool) -> Any:
    """Wrap a HF CTC model so the exported graph owns normalisation, masking and lengths."""
    import torch

    class WaveformCtc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, input_values: Any, input_lengths: Any) -> tuple[Any, Any]:
            lengths = input_lengths.reshape(-1)
            positions = torch.arange(input_values.shape[1], device=input_values.device)
            mask = positions[None, :] < lengths[:, None]
            values = input_values
            if normalize:
                weights = mask.to(values.dtype)
                count = weights.sum(-1, keepdim=True).clamp(min=1.0)
                mean = (values * weights).sum(-1, keepdim=True) / count
                variance = (((values - mean) * weights) ** 2).sum(-1, keepdim=True) / count
                values = (values - mean) / torch.sqrt(variance + _NORM_EPSILON) * weights
            logits = self.network(input_values=values, attention_mask=mask.long()).logits
            frames = self.network._get_feat_extract_output_lengths(lengths)
            # Clients clamp to the padded frame count: a dynamic bound would trace as a constant.
            frames = torch.clamp(frames.to(torch.int64), min=1)
            return torch.log_softmax(logits.float(), dim=-1), frames.reshape(-1, 1)

    return WaveformCtc().eval()


def replace_nodes(graph: Any, nodes: list[Any], added: list[Any]) -> None:
    """Give `graph` these nodes and initializers, dropping initializers no node reads any more
    (a rewritten weight would otherwise ship twice)."""
    graph.initializer.extend(added)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def convs_as_2d(model: Any) -> int:
    """Run each 1-D Conv with a constant weight as a 2-D Conv of height 1; returns how many.

    Why: the same arithmetic, but ONNX Runtime's CPU layout transformer gives only 4-D Convs its
    blocked NCHWc kernels. Measured on the base-sized wav2vec2 graph, whose strided feature
    encoder convolutions are over half of the int8 graph's time: 1.06x for int8 (every round
    faster), level for fp32 and for the demo model (`bench.int8_recipes`). Outputs differ from
    the 1-D graph's by float rounding only (3e-6 on the base-sized model).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes: list[Any] = []
    added: list[Any] = []
    rewritten = 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is None or len(weight.dims) != 3:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            nodes.append(node)
            continue
        pads = list(attrs.get("pads", [0, 0]))
        p = f"{node.name or node.output[0]}/as_2d"
        values = numpy_helper.to_array(weight)[:, :, None, :]
        added.append(numpy_helper.from_array(values, f"{p}/w"))
        added.append(numpy_helper.from_array(np.array([2], np.int64), f"{p}/axis"))
        conv = helper.make_node(
            "Conv",
            [f"{p}/x", f"{p}/w", *node.input[2:]],
            [f"{p}/y"],
            name=f"{p}/Conv",
            kernel_shape=[1, int(weight.dims[2])],
            strides=[1, int(attrs.get("strides", [1])[0])],
            dilations=[1, int(attrs.get("dilations", [1])[0])],
            pads=[0, pads[0], 0, pads[1]],
            group=int(attrs.get("group", 1)),
        )
        nodes += [
            helper.make_node("Unsqueeze", [node.input[0], f"{p}/axis"], [f"{p}/x"], name=f"{p}/U"),
            conv,
            helper.make_node("Squeeze", [f"{p}/y", f"{p}/axis"], [node.output[0]], name=f"{p}/S"),
        ]
        rewritten += 1
    replace_nodes(graph, nodes, added)
    return rewritten


def export_onnx(model_dir: Path, target: Path, *, opset: int = DEFAULT_OPSET) -> OnnxModelSpec:
    """Export a verified model directory to `target` (atomically: readers never see half a file).

    Only raw-waveform CTC models (wav2vec2, HuBERT, WavLM, data2vec-audio: feature extractors that
    produce `input_values`) are supported; spectrogram front ends would need the features in the
    graph too.
    """
    import onnx
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    from asr_assets.inference.local import frame_stride_samples

    started = time.perf_counter()
    sha256 = verify_checksums(model_dir)
    info = model_info(model_dir, sha256)
    features = AutoFeatureExtractor.from_pretrained(str(model_dir), local_files_only=True)
    if "input_values" not in getattr(features, "model_input_names", ["input_values"]):
        raise ValueError(
            f"{model_dir}: only raw-waveform CTC models export (feature extractor produces "
            f"{features.model_input_names})"
        )
    # Eager attention traces to plain ops; fused kernels do not always have ONNX symbolics.
    network = AutoModelForCTC.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    )
    network.eval()
    stride = frame_stride_samples(network.config, features)
    if not stride or not hasattr(network, "_get_feat_extract_output_lengths"):
        raise ValueError(f"{model_dir}: cannot derive frames per sample for this architecture")
    module = _waveform_ctc_module(network, bool(getattr(features, "do_normalize", False)))
    example = (
        torch.zeros(2, TARGET_SAMPLE_RATE, dtype=torch.float32).uniform_(-0.1, 0.1),
        torch.tensor([[TARGET_SAMPLE_RATE], [TARGET_SAMPLE_RATE // 2]], dtype=torch.int64),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        # The tracer warns about Python conditions on shapes that are constant for CTC models.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(staging),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_VALUES, INPUT_LENGTHS],
            output_names=[OUTPUT_LOG_PROBS, OUTPUT_LENGTHS],
            dynamic_axes={
                INPUT_VALUES: {0: "batch", 1: "samples"},
                INPUT_LENGTHS: {0: "batch"},
                OUTPUT_LOG_PROBS: {0: "batch", 1: "frames"},
                OUTPUT_LENGTHS: {0: "batch"},
            },
        )
    spec = OnnxModelSpec(
        path=target,
        model=info,
        frame_stride_samples=int(stride),
        vocab_size=int(network.config.vocab_size),
    )
    graph = onnx.load(str(staging))
    convs_as_2d(graph)
    onnx.helper.set_model_props(graph, spec.metadata())
    onnx.checker.check_model(graph)
    onnx.save(graph, str(staging))
    staging.replace(target)
    log.info(
        "onnx_exported",
        model=info.name,
        model_version=info.version,
        path=str(target),
        opset=opset,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return spec


def read_onnx_spec(path: Path) -> OnnxModelSpec:
    """The model identity and frame stride stored in an exported file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return OnnxModelSpec.from_metadata(path, {p.key: p.value for p in graph.metadata_props})


def quantize_int8(source: Path, target: Path) -> OnnxModelSpec:
    """Dynamic int8 quantization of the MatMul/Gemm weights (the transformer layers).

    The convolutional front end stays float: int8 convolutions (ConvInteger) are slow on most CPU
    execution providers and cost the most accuracy on raw waveforms.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    spec = read_onnx_spec(source)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    quantize_dynamic(
        str(source),
        str(staging),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    quantized = OnnxModelSpec(
        path=target,
        model=spec.model,
        frame_stride_samples=spec.frame_stride_samples,
        vocab_size=spec.vocab_size,
        sample_rate=spec.sample_rate,
        quantization="int8-dynamic",
    )
    graph = onnx.load(str(staging))
    onnx.helper.set_model_props(graph, quantized.metadata())
    onnx.save(graph, str(staging))
    staging.replace(target)
    log.info("onnx_quantized", path=str(target), source=str(source), weight_type="int8")
    return quantized


def default_cache_dir() -> Path:
    """Where exports made on demand are kept; one subdirectory per model hash.

    On persistent disk (the user cache, not tmp): exporting the base-sized model takes ~85 s and
    quantizing it ~26 s more, a cost to pay once per model, not once per boot.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "asr-platform" / "onnx"


def ensure_onnx_model(
    model_dir: Path, *, cache_dir: Path | None = None, int8: bool = False
) -> Path:
    """Path of this model's ONNX export (int8 if asked), exporting it once per model hash."""
    sha256 = verify_checksums(model_dir)
    directory = (cache_dir or default_cache_dir()) / f"{sha256}.v{EXPORT_FORMAT}"
    fp32 = directory / ONNX_FILE
    if not fp32.is_file():
        export_onnx(model_dir, fp32)
    if not int8:
        return fp32
    quantized = directory / INT8_FILE
    if not quantized.is_file():
        quantize_int8(fp32, quantized)
    return quantized


def pad_batch(clips: Sequence[np.ndarray], padded_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad clips with zeros to one length: the graph's two inputs."""
    values = np.zeros((len(clips), padded_length), dtype=np.float32)
    lengths = np.zeros((len(clips), 1), dtype=np.int64)
    for row, clip in enumerate(clips):
        samples = np.asarray(clip, dtype=np.float32).reshape(-1)
        if samples.size > padded_length:
            raise ValueError(f"clip of {samples.size} samples exceeds padding {padded_length}")
        values[row, : samples.size] = samples
        lengths[row, 0] = samples.size
    return values, lengths


def emissions_from_outputs(
    log_probs: np.ndarray, output_lengths: np.ndarray, frame_duration_s: float
) -> list[Emissions]:
    """Split a batch's outputs into per-clip emissions without their padding frames."""
    frames = np.asarray(output_lengths).reshape(-1)
    if log_probs.ndim != 3 or log_probs.shape[0] != frames.size:
        raise InferenceError(
            f"outputs of shapes {log_probs.shape} and {output_lengths.shape} do not match"
        )
    out = []
    for row, count in enumerate(frames.tolist()):
        kept = max(1, min(int(count), log_probs.shape[1]))
        # A copy, not a view: a view would keep the whole padded batch alive per phrase.
        rows = np.array(log_probs[row, :kept], dtype=np.float32)
        out.append(Emissions(rows, frame_duration_s))
    return out


class LocalOnnxEngine:
    """ONNX Runtime on this machine's CPU, from an export of a verified model directory.

    The export is made on first use and cached per model hash (or given explicitly); its stored
    hash must equal the directory's, so the rows it scores name the right model. With `int8`, the
    dynamically quantized graph runs instead (smaller and usually faster on CPUs with VNNI, at a
    small accuracy cost measured by `tools/export/evaluate.py`).
    """

    device = "cpu"  # CPUExecutionProvider only: the GPU path is Triton

    def __init__(
        self,
        model_dir: Path,
        *,
        onnx_path: Path | None = None,
        int8: bool = False,
        cache_dir: Path | None = None,
        num_threads: int | None = None,
        max_batch_size: int = 16,
        max_batch_seconds: float | None = None,
    ) -> None:
        import onnxruntime

        from asr_assets.inference.local import batch_seconds_for

        started = time.perf_counter()
        sha256 = verify_checksums(model_dir)
        self.model = model_info(model_dir, sha256)
        self.vocabulary = read_vocabulary(model_dir)
        if onnx_path is None:
            onnx_path = ensure_onnx_model(model_dir, cache_dir=cache_dir, int8=int8)
        options = onnxruntime.SessionOptions()
        # Batches run one at a time: parallelism inside operators, none between them.
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = num_threads or usable_cpus()
        self._session = onnxruntime.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.spec = OnnxModelSpec.from_metadata(Path(onnx_path), metadata)
        if self.spec.model.sha256 != sha256:
            raise ModelIntegrityError(
                f"{onnx_path} was exported from model {self.spec.model.sha256[:12]}, "
                f"not from {model_dir} ({sha256[:12]}); re-export it"
            )
        self.name = "local-onnx-int8" if self.spec.quantization != "none" else "local-onnx"
        #: Keys the emissions cache apart from float engines of the same model.
        self.numerics = "int8" if self.spec.quantization != "none" else "fp32"
        self.max_batch_size = max_batch_size
        # Padded audio, not the clip count, bounds a batch (None: sized to the model).
        seconds = max_batch_seconds or batch_seconds_for(model_dir)
        self.max_batch_samples = int(seconds * TARGET_SAMPLE_RATE)
        log.info(
            "model_loaded",
            model=self.model.name,
            model_version=self.model.version,
            engine=self.name,
            path=str(onnx_path),
            load_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if not clips:
            return []
        if self._session is None:
            raise InferenceError("engine is closed")
        longest = max(int(np.asarray(c).size) for c in clips)
        # The conv front end needs at least one receptive field; pad tiny inputs up to it.
        padded = max(longest, self.spec.frame_stride_samples * 2)
        values, lengths = pad_batch(clips, padded)
        try:
            log_probs, frames = self._session.run(
                [OUTPUT_LOG_PROBS, OUTPUT_LENGTHS],
                {INPUT_VALUES: values, INPUT_LENGTHS: lengths},
            )
        except Exception as exc:  # onnxruntime raises its own untyped runtime errors
            raise InferenceError(f"onnx runtime inference failed: {exc}") from exc
        outputs = emissions_from_outputs(log_probs, frames, self.spec.frame_duration_s)
        del values, log_probs
        release_freed_memory()
        return outputs

    def close(self) -> None:
        self._session = None


def max_abs_difference(
    reference: Sequence[Emissions], candidate: Sequence[Emissions]
) -> tuple[float, int]:
    """Largest |Δ log-prob| over the frames both engines produced, and how many frame counts
    differ (a frame-count mismatch is a contract break, not a numeric difference)."""
    worst = 0.0
    mismatched = 0
    for ref, cand in zip(reference, candidate, strict=True):
        if ref.num_frames != cand.num_frames:
            mismatched += 1
        frames = min(ref.num_frames, cand.num_frames)
        if frames:
            delta = np.abs(ref.log_probs[:frames] - cand.log_probs[:frames])
            worst = max(worst, float(np.max(delta)))
    return worst, mismatched


def parity_clips(seed: int = 0, seconds: Sequence[float] = (0.45, 1.3, 2.75)) -> list[np.ndarray]:
    """Deterministic voiced-looking clips of different lengths, so a check exercises padding."""
    rng = np.random.default_rng(seed)
    clips = []
    for index, duration in enumerate(seconds):
        t = np.arange(int(duration * TARGET_SAMPLE_RATE)) / TARGET_SAMPLE_RATE
        base = 140.0 + 40.0 * index
        voiced = sum(np.sin(2 * math.pi * base * k * t) / k for k in range(1, 5))
        noise = 0.02 * rng.standard_normal(t.size)
        clips.append((0.2 * voiced + noise).astype(np.float32))
    return clips
