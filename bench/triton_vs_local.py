"""Phrases per second: local torch, local ONNX Runtime, ONNX Runtime int8, and Triton.

Same generated clips (0.5–3.5 s, voiced-looking tones), same model, each engine fed the batches
the transcripts stage would plan for it, after one warm-up pass. Triton is the wheel's CPU-only
server (nvidia-pytriton) running the exported graph through a python-backend `model.py` with ONNX
Runtime, started on 127.0.0.1 by `tests/support/triton_server.py`: on this machine it measures
client, transport, bucketing and dynamic batching overhead on the same CPUs, not a GPU.

`python -m bench triton_vs_local`, or `python -m bench.triton_vs_local --model-dir DIR
--phrases 128 --threads 2` for the demo model.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asr_assets.core.batching import plan_batches
from asr_assets.inference.base import InferenceEngine


def clips(count: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        seconds = float(rng.uniform(0.5, 3.5))
        t = np.arange(int(seconds * 16_000)) / 16_000
        base = float(rng.uniform(120, 320))
        voiced = sum(np.sin(2 * math.pi * base * k * t) / k for k in range(1, 5))
        envelope = 0.5 - 0.5 * np.cos(2 * math.pi * t / seconds)
        out.append(
            (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        )
    return out


def phrases_per_second(engine: InferenceEngine, audio: Sequence[np.ndarray], repeats: int) -> float:
    plans = plan_batches(
        [clip.size for clip in audio],
        max_batch_size=engine.max_batch_size,
        max_batch_samples=engine.max_batch_samples,
    )
    for plan in plans:  # warm-up: allocations, kernel selection, connections
        engine.infer([audio[i] for i in plan.indices])
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for plan in plans:
            engine.infer([audio[i] for i in plan.indices])
        best = min(best, time.perf_counter() - started)
    return len(audio) / best


def run(
    model_dir: Path, phrases: int, threads: int, repeats: int, workdir: Path
) -> dict[str, float]:
    from asr_assets.inference.local import LocalTorchEngine
    from asr_assets.inference.model_dir import model_info, read_vocabulary, verify_checksums
    from asr_assets.inference.onnx import LocalOnnxEngine
    from asr_assets.inference.triton import TritonInferenceEngine, TritonSettings
    from tests.support.triton_server import exported_repository, running_server

    audio = clips(phrases)
    figures: dict[str, float] = {}
    cache = workdir / "onnx-cache"
    for name, factory in (
        ("local torch", lambda: LocalTorchEngine(model_dir, num_threads=threads)),
        ("local onnx", lambda: LocalOnnxEngine(model_dir, cache_dir=cache, num_threads=threads)),
        (
            "local onnx int8",
            lambda: LocalOnnxEngine(model_dir, cache_dir=cache, int8=True, num_threads=threads),
        ),
    ):
        engine = factory()
        try:
            figures[name] = phrases_per_second(engine, audio, repeats)
        finally:
            engine.close()
    model = model_info(model_dir, verify_checksums(model_dir))
    repository = exported_repository(model_dir, workdir / "repository", model.name)
    with running_server(repository, model.name, workdir / "triton") as (server, _):
        engine = TritonInferenceEngine(
            TritonSettings(url=server.grpc_url, model_name=model.name),
            model=model,
            vocabulary=read_vocabulary(model_dir),
        )
        try:
            figures["triton (grpc, cpu python backend)"] = phrases_per_second(
                engine, audio, repeats
            )
        finally:
            engine.close()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.triton_vs_local")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: tiny random)")
    parser.add_argument("--phrases", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per engine")
    parser.add_argument("--repeats", type=int, default=3)
    # Run from `python -m bench` (no arguments) or directly with its own options.
    args = parser.parse_args([] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as scratch:
        workdir = Path(scratch)
        model_dir = args.model_dir
        if model_dir is None:
            from tests.support.models import build_tiny_model

            model_dir = build_tiny_model(workdir / "tiny-random")
        figures = run(model_dir.resolve(), args.phrases, args.threads, args.repeats, workdir)
    baseline = figures["local torch"]
    print(f"{args.phrases} phrases of 0.5-3.5 s, model {model_dir.name}, {args.threads} thread(s)")
    print(f"{'engine':<36} {'phrases/s':>10} {'x torch':>8}")
    for name, value in figures.items():
        print(f"{name:<36} {value:>10.1f} {value / baseline:>8.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
