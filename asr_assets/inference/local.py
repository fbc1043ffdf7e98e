"""In-process CPU inference with torch: the embedded default and the fallback for Triton."""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asr_assets.core.audio import TARGET_SAMPLE_RATE
from asr_assets.inference.base import Emissions, InferenceError
from asr_assets.inference.memory import release_freed_memory, usable_cpus
from asr_assets.inference.model_dir import model_info, read_vocabulary, verify_checksums
from asr_assets.observability.logging import get_logger

log = get_logger(__name__)


def frame_stride_samples(config: Any, feature_extractor: Any) -> int | None:
    """Input samples per output frame, from the architecture's own configuration."""
    conv_stride = getattr(config, "conv_stride", None)
    if conv_stride and getattr(config, "feat_extract_norm", None) is not None:
        return int(math.prod(conv_stride))
    hop = getattr(feature_extractor, "hop_length", None)
    stride = getattr(feature_extractor, "stride", 1)
    if hop:
        return int(hop) * int(stride or 1)
    return None


def configure_torch_threads(torch: Any, num_threads: int | None) -> None:
    """Intra-op threads as asked (else the CPUs the process may use), inter-op threads one.

    Batches run one at a time, so inter-op parallelism only oversubscribes the cores the
    intra-op pool already uses. torch accepts the inter-op setting once, before first use.
    """
    torch.set_num_threads(num_threads or usable_cpus())
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already used in this process: the setting is fixed for good
            log.debug("interop_threads_fixed", threads=torch.get_num_interop_threads())


@functools.lru_cache(maxsize=2)
def _load_network(model_dir: str, sha256: str) -> tuple[Any, Any]:
    """The network and feature extractor, loaded once per process per verified model.

    Keyed by the checksum the caller verified, so changed weights load afresh; the network is
    only read under `inference_mode`, so runs in one process (the UI's in-process executor, a
    benchmark, the platform's workers) share it instead of paying the load each time.
    """
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    del sha256  # part of the cache key only
    network = AutoModelForCTC.from_pretrained(model_dir, local_files_only=True)
    network.eval()
    features = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    return network, features


#: The padded audio a batch may hold is sized to the model: activations grow with frames x width
#: x depth. The reference is the demo model (hidden 128 x 5 layers), for which 120 s of padded
#: audio per batch is the fastest; a wav2vec2-base-sized model (768 x 12) then gets 8.3 s, about
#: two clips, where batches of 16 ran no faster than batch 1 and paged large buffers.
REFERENCE_BATCH_SECONDS = 120.0
REFERENCE_MODEL_WIDTH = 128 * 5
MIN_BATCH_SECONDS = 4.0


def batch_seconds_for(model_dir: Path) -> float:
    """Padded audio seconds per batch for this model, from its `config.json`."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        width = int(config.get("hidden_size", 0)) * int(config.get("num_hidden_layers", 0))
    except (OSError, ValueError, TypeError):
        width = 0
    if width <= 0:
        return REFERENCE_BATCH_SECONDS
    scaled = REFERENCE_BATCH_SECONDS * REFERENCE_MODEL_WIDTH / width
    return max(MIN_BATCH_SECONDS, min(REFERENCE_BATCH_SECONDS, scaled))


class LocalTorchEngine:
    """Loads a verified Hugging Face CTC model directory and runs it under `inference_mode`.

    torch and transformers are imported here, not at module import, so the code location and
    the Triton path never pay for them.
    """

    name = "local-torch"
    numerics = "fp32"
    device = "cpu"  # the model is never moved to an accelerator: the GPU path is Triton

    def __init__(
        self,
        model_dir: Path,
        *,
        num_threads: int | None = None,
        max_batch_size: int = 16,
        max_batch_seconds: float | None = None,
        bf16: bool = False,
    ) -> None:
        import torch

        started = time.perf_counter()
        #: bf16 autocast of the forward pass (log-softmax stays float32). Measured on this
        #: machine's CPU (AMD EPYC, 2 threads, demo model, batches of 16): 1.55x fp32 eager,
        #: against 1.14x for ONNX Runtime and 1.2x for torch.compile (bench/cpu_numerics.py).
        self.bf16 = bf16
        if bf16:
            self.name = "local-torch-bf16"
            self.numerics = "bf16"
        sha256 = verify_checksums(model_dir)
        self.model = model_info(model_dir, sha256)
        self.vocabulary = read_vocabulary(model_dir)
        configure_torch_threads(torch, num_threads)
        self._torch = torch
        self._network, self._features = _load_network(str(Path(model_dir).resolve()), sha256)
        self._stride = frame_stride_samples(self._network.config, self._features)
        self.max_batch_size = max_batch_size
        # Padded audio, not the clip count, bounds a batch (None: sized to the model).
        seconds = max_batch_seconds or batch_seconds_for(model_dir)
        self.max_batch_samples = int(seconds * TARGET_SAMPLE_RATE)
        log.info(
            "model_loaded",
            model=self.model.name,
            model_version=self.model.version,
            engine=self.name,
            load_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if not clips:
            return []
        torch = self._torch
        try:
            inputs = self._features(
                [np.asarray(c, dtype=np.float32) for c in clips],
                sampling_rate=TARGET_SAMPLE_RATE,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            with (
                torch.inference_mode(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16),
            ):
                logits = self._network(**inputs).logits
                log_probs = torch.log_softmax(logits.float(), dim=-1).numpy()
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"local inference failed: {exc}") from exc
        lengths = self._output_lengths(inputs, [len(c) for c in clips], log_probs.shape[1])
        outputs = []
        for row, (clip, frames) in enumerate(zip(clips, lengths, strict=True)):
            frame_s = (self._stride or len(clip) / max(frames, 1)) / TARGET_SAMPLE_RATE
            outputs.append(Emissions(np.array(log_probs[row, :frames]), frame_s))
        del inputs, logits, log_probs
        release_freed_memory()
        return outputs

    def _output_lengths(self, inputs: Any, samples: list[int], padded_frames: int) -> list[int]:
        """Frames that belong to each clip, so padding frames never reach decoding."""
        if self._stride:
            # Conv front ends and framed features both yield about one frame per stride.
            estimate = [max(1, min(padded_frames, s // self._stride)) for s in samples]
            mask = inputs.get("attention_mask")
            lengths_fn = getattr(self._network, "_get_feat_extract_output_lengths", None)
            if mask is not None and lengths_fn is not None and "input_values" in inputs:
                exact = lengths_fn(mask.sum(-1)).tolist()
                return [max(1, min(padded_frames, int(n))) for n in exact]
            if mask is not None and "input_features" in inputs:
                feature_frames = mask.sum(-1).tolist()
                return [max(1, min(padded_frames, int(n))) for n in feature_frames]
            return estimate
        longest = max(samples)
        return [max(1, round(padded_frames * s / longest)) for s in samples]

    def close(self) -> None:
        self._network = None
