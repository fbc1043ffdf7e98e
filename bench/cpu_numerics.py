"""What `torch.compile`, bf16 autocast and ONNX Runtime buy on this CPU, forward pass only.

Issue-18 presets ask to measure these rather than assume them. For one model (the demo model or
the base-sized random one) and one set of clips, interleaved over `--rounds`, it times the
engine-free forward pass over the same batches:

- `eager`: torch fp32, `inference_mode` (what `ASR_LOCAL_BACKEND=torch` runs);
- `compile`: `torch.compile(model, dynamic=True)` (first call's compile time reported apart);
- `bf16`: `torch.autocast("cpu", dtype=torch.bfloat16)` around eager; its letters are compared
  with fp32's (agreement share), since a speed-up that changes letters is not one;
- `onnx`: ONNX Runtime on the exported graph (`ASR_LOCAL_BACKEND=onnx`, the default).

Channels-last is not measured: it is a 4-D (NCHW) memory format, and these models' convolutions
are 1-D over the waveform, so there is nothing for it to reorder.

    python -m bench.cpu_numerics --model demo --clips 64 --rounds 3
    python -m bench.cpu_numerics --model base --clips 12 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.throughput import OUT, model_dir_for


def _clips(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(int(rng.uniform(1.0, 4.0) * 16_000))).astype(np.float32)
        for _ in range(count)
    ]


def _batches(clips: list[np.ndarray], size: int) -> list[tuple[Any, Any]]:
    import torch

    order = sorted(range(len(clips)), key=lambda i: clips[i].size)
    out = []
    for start in range(0, len(order), size):
        members = [clips[i] for i in order[start : start + size]]
        width = max(c.size for c in members)
        values = np.zeros((len(members), width), dtype=np.float32)
        mask = np.zeros((len(members), width), dtype=np.int64)
        for row, clip in enumerate(members):
            values[row, : clip.size] = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)
            mask[row, : clip.size] = 1
        out.append((torch.from_numpy(values), torch.from_numpy(mask)))
    return out


def interleaved_seconds(
    runners: dict[str, Callable[[], object]], rounds: int
) -> dict[str, list[float]]:
    """Each runner timed once per round, in turn, so machine noise falls on all of them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def run_header(
    model_name: str, clips: list[np.ndarray], batch: int, threads: int, rounds: int
) -> dict[str, Any]:
    """What every CPU benchmark's JSON starts with: the workload it measured."""
    return {
        "model": model_name,
        "clips": len(clips),
        "audio_s": round(sum(c.size for c in clips) / 16_000, 1),
        "batch": batch,
        "threads": threads,
        "rounds": rounds,
    }


def measure(model_name: str, count: int, rounds: int, batch: int, threads: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCTC

    from asr_assets.inference.onnx import LocalOnnxEngine

    torch.set_num_threads(threads)
    model_dir = model_dir_for(model_name)
    clips = _clips(count)
    audio_s = sum(c.size for c in clips) / 16_000
    batches = _batches(clips, batch)
    eager = AutoModelForCTC.from_pretrained(str(model_dir)).eval()
    compiled = torch.compile(eager, dynamic=True)
    onnx = LocalOnnxEngine(Path(model_dir), num_threads=threads, max_batch_size=batch)

    def run_torch(model: Any, autocast: bool = False) -> list[np.ndarray]:
        outs = []
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            for values, mask in batches:
                outs.append(model(input_values=values, attention_mask=mask).logits.float().numpy())
        return outs

    by_length = sorted(clips, key=lambda c: c.size)  # the same batches as the torch runs

    def run_onnx() -> None:
        for start in range(0, len(by_length), batch):
            onnx.infer(by_length[start : start + batch])

    started = time.perf_counter()
    run_torch(compiled)
    compile_s = time.perf_counter() - started
    reference = run_torch(eager)
    bf16 = run_torch(eager, autocast=True)
    agree = np.mean(
        [
            np.array_equal(r.argmax(-1), b.argmax(-1))
            for rb, bb in zip(reference, bf16, strict=True)
            for r, b in zip(rb, bb, strict=True)
        ]
    )
    runners = {
        "eager": lambda: run_torch(eager),
        "compile": lambda: run_torch(compiled),
        "bf16": lambda: run_torch(eager, autocast=True),
        "onnx": run_onnx,
    }
    seconds = interleaved_seconds(runners, rounds)
    onnx.close()
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        **run_header(model_name, clips, batch, threads, rounds),
        "compile_first_call_s": round(compile_s, 1),
        "bf16_frame_argmax_agreement": round(float(agree), 4),
        "audio_s_per_s": {k: round(audio_s / v, 1) for k, v in medians.items()},
        "vs_eager": {k: round(medians["eager"] / v, 2) for k, v in medians.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("demo", "base"), default="demo")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv if argv is not None else [])
    figures = measure(args.model, args.clips, args.rounds, args.batch, args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"cpu-numerics-{args.model}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
