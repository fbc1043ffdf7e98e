"""End-to-end throughput against the model itself and the loop a user would write.

One synthesized day, measured interleaved in rounds (medians reported), each measure in the
same process family:

- forward only: the engine's `infer` on decoded clips, best of batch 1 and the engine's own
  batch plan (the ceiling `asr score` is held to: >= 90% of it);
- naive loop: a fresh process doing soundfile -> feature extractor -> forward at batch 1 ->
  argmax -> edit distance, the script a user writes (`asr score` must beat it 2x);
- `asr score`: a fresh process running the real CLI on a cold copy of the day, per backend
  (torch, ONNX, ONNX int8), with per-stage seconds from the run's step stats and peak RSS.

Audio-seconds per wall-second, the ratios, per-stage seconds and peak RSS are printed and
written as JSON (`bench/out/throughput-<model>.json`). `--memory` runs the pipeline alone at
growing day sizes (demo model, short clips) for peak RSS.

    python -m bench.throughput --model base --phrases 24 --rounds 1
    python -m bench.throughput --model demo --phrases 200 --rounds 3
    python -m bench.throughput --memory --sizes 1000,10000[,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-11-27"
OUT = REPO / "bench" / "out"
MODEL_CACHE = REPO / ".tmp" / "bench-models"
DEMO_MODEL = REPO / "models" / "demo-letters"
LETTERS = "abcdefghijklmnopqrstuvwxyz"

NAIVE = r"""
import json, sys, time
started = time.perf_counter()
from pathlib import Path
import numpy as np, pyarrow.parquet as pq, soundfile as sf, soxr, torch
from transformers import AutoFeatureExtractor, AutoModelForCTC

root, model_dir, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
model = AutoModelForCTC.from_pretrained(model_dir).eval()
features = AutoFeatureExtractor.from_pretrained(model_dir)
vocab = json.loads((Path(model_dir) / "vocab.json").read_text())
tokens = {index: token for token, index in vocab.items()}

def distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]

errors = letters = 0
for part in sorted((root / "catalog").rglob("*.parquet")):
    for row in pq.read_table(part).to_pylist():
        samples, rate = sf.read(root / row["audio_key"], dtype="float32")
        if samples.ndim > 1:
            samples = samples.mean(axis=1)
        if rate != 16000:
            samples = soxr.resample(samples, rate, 16000)
        inputs = features(samples, sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            ids = model(**inputs).logits[0].argmax(-1).tolist()
        out, last = [], None
        for i in ids:
            if i != last and tokens[i] not in ("<pad>", "|"):
                out.append(tokens[i])
            last = i
        expected = row["expected_text"].split(" ")
        errors += distance(expected, out)
        letters += len(expected)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "letter_error_rate": errors / max(letters, 1)}))
"""

# Runs the real CLI in this process and reports its peak RSS on the way out. VmHWM, not
# ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
SCORE = r"""
import atexit, re, sys
def peak():
    status = open("/proc/self/status").read()
    sys.stderr.write("PEAK_RSS_KB=%s\n" % re.search(r"VmHWM:\s+(\d+)", status).group(1))
atexit.register(peak)
from asr_assets.platform.cli import exit_now, main
exit_now(main(["score", sys.argv[1]]))
"""


def build_base_model(target: Path) -> Path:
    """A wav2vec2-base-sized Wav2Vec2ForCTC with random weights (the production architecture)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    from asr_assets.inference.model_dir import write_checksums
    from tests.support.models import VOCAB

    if (target / "SHA256SUMS").is_file():
        return target
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(VOCAB), pad_token_id=0)  # defaults: 768 x 12 layers
    config.asr_model_name = "base-random"
    config.asr_model_version = "bench"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    Wav2Vec2ForCTC(config).save_pretrained(str(staging), safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True
    ).save_pretrained(str(staging))
    (staging / "vocab.json").write_text(json.dumps(VOCAB))
    (staging / "MODEL_CARD.md").write_text("# base-random\nRandom weights, for benchmarks.\n")
    write_checksums(staging)
    staging.replace(target)
    return target


def model_dir_for(name: str) -> Path:
    if name == "demo":
        return DEMO_MODEL
    return build_base_model(MODEL_CACHE / "base-random")


def synthesize_day(root: Path, phrases: int, min_s: float, max_s: float, seed: int = 0) -> float:
    """A catalog day of distinct voiced-looking clips; returns its audio seconds."""
    from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

    rng = np.random.default_rng(seed)
    specs, total = [], 0.0
    for index in range(phrases):
        seconds = round(float(rng.uniform(min_s, max_s)), 2)
        # Every clip distinct, so content-addressed caches cannot flatter the pipeline.
        clip = tone(seconds, freq=float(rng.uniform(120, 320)))
        clip = clip + 0.005 * rng.standard_normal(clip.size).astype(np.float32)
        text = " ".join(rng.choice(list(LETTERS), size=int(rng.integers(2, 7))))
        key = f"audio/{index // 1000}/{index}.wav"
        specs.append(PhraseSpec(f"act-{index // 5}", index % 5, text, wav_bytes(clip), key))
        total += seconds
    write_day(root, date.fromisoformat(DAY), specs)
    return total


def decoded_clips(root: Path) -> list[np.ndarray]:
    import soundfile as sf

    return [sf.read(path, dtype="float32")[0] for path in sorted((root / "audio").rglob("*.wav"))]


#: Intra-op threads for every measure (0: each engine's default); set by `--threads`.
THREADS = 0


def open_engine(model_dir: Path, backend: str) -> Any:
    from asr_assets.resources.inference import LocalInferenceResource

    resource = LocalInferenceResource(
        model_dir=str(model_dir),
        num_threads=THREADS or None,
        backend="torch" if backend == "torch" else "onnx",
        quantize_int8=backend == "int8",
    )
    return resource.open_engine()


def forward_only(model_dir: Path, backend: str, clips: list[np.ndarray]) -> dict[str, float]:
    """Seconds for the engine alone over the day: batch 1 and the engine's batch plan."""
    from asr_assets.core.batching import plan_batches

    with open_engine(model_dir, backend) as engine:
        engine.infer([clips[0]])  # warm-up: first-call allocations are not throughput
        started = time.perf_counter()
        for clip in clips:
            engine.infer([clip])
        batch_1 = time.perf_counter() - started
        plans = plan_batches(
            [c.size for c in clips],
            max_batch_size=engine.max_batch_size,
            max_batch_samples=engine.max_batch_samples,
        )
        started = time.perf_counter()
        for plan in plans:
            engine.infer([clips[i] for i in plan.indices])
        planned = time.perf_counter() - started
    return {"batch_1_s": batch_1, "planned_s": planned, "best_s": min(batch_1, planned)}


def child_env(root: Path, backend: str, home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ASR_ENV": "local",
        "ASR_DATA_ROOT": str(root),
        "DAGSTER_HOME": str(home),
        "ASR_LOCAL_BACKEND": "torch" if backend == "torch" else "onnx",
        "ASR_ONNX_INT8": "1" if backend == "int8" else "0",
    }
    if THREADS:
        env["ASR_TORCH_THREADS"] = str(THREADS)
    return env


def naive_loop(model_dir: Path, day: Path) -> dict[str, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", NAIVE, str(day), str(model_dir), str(THREADS)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wall = time.perf_counter() - started
    return {"wall_s": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def stage_seconds(home: Path) -> dict[str, float]:
    """Seconds per step of the newest run in `home`, from Dagster's own step stats."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs(limit=1)
        return {
            stat.step_key: round(stat.end_time - stat.start_time, 3)
            for stat in instance.get_run_step_stats(run.run_id)
            if stat.start_time and stat.end_time
        }


def asr_score(model_dir: Path, day: Path, backend: str, scratch: Path) -> dict[str, Any]:
    """The real CLI on a cold copy of the day (no clip or emissions cache)."""
    root = scratch / f"store-{backend}"
    home = scratch / f"home-{backend}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(day, root)
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # the instance `make demo` uses
    env = child_env(root, backend, home)
    env["ASR_MODEL_DIR"] = str(model_dir)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", SCORE, DAY], capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(
            f"asr score failed ({backend}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
    peak = [line for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_KB=")]
    return {
        "wall_s": wall,
        "peak_rss_mb": int(peak[-1].split("=")[1]) / 1024 if peak else None,
        "stages_s": stage_seconds(home),
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = model_dir_for(args.model)
    backends = [b for b in args.backends.split(",") if b]
    with tempfile.TemporaryDirectory(prefix="asr-bench-") as tmp:
        scratch = Path(tmp)
        day = scratch / "day"
        audio_s = synthesize_day(day, args.phrases, args.min_seconds, args.max_seconds)
        clips = decoded_clips(day)
        for backend in backends:  # exports (ONNX, int8) happen once, outside the timings
            if backend != "torch":
                with open_engine(model_dir, backend):
                    pass
        samples: dict[str, list[Any]] = {}
        for round_index in range(args.rounds):
            if args.naive and "torch" not in backends:
                samples.setdefault("naive_torch", []).append(naive_loop(model_dir, day))
            for backend in backends:
                samples.setdefault(f"forward_{backend}", []).append(
                    forward_only(model_dir, backend, clips)
                )
                if backend == "torch":
                    samples.setdefault("naive_torch", []).append(naive_loop(model_dir, day))
                samples.setdefault(f"score_{backend}", []).append(
                    asr_score(model_dir, day, backend, scratch)
                )
            print(f"  round {round_index + 1}/{args.rounds} done", flush=True)
    figures: dict[str, Any] = {
        "model": args.model,
        "phrases": args.phrases,
        "audio_seconds": round(audio_s, 2),
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "threads": THREADS or "default",
        "measured": {},
    }
    for name, runs in samples.items():
        key = "best_s" if name.startswith("forward") else "wall_s"
        seconds = statistics.median(run[key] for run in runs)
        entry: dict[str, Any] = {"seconds": round(seconds, 3), "audio_s_per_s": audio_s / seconds}
        if name.startswith("score"):
            entry["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] or 0 for r in runs)
            entry["stages_s"] = runs[len(runs) // 2]["stages_s"]
        if name.startswith("forward"):
            entry["batch_1_s"] = statistics.median(r["batch_1_s"] for r in runs)
            entry["planned_s"] = statistics.median(r["planned_s"] for r in runs)
        entry["each_round_s"] = [round(run[key], 3) for run in runs]
        figures["measured"][name] = entry
    measured = figures["measured"]
    ratios = {}
    for backend in backends:
        score, forward = measured.get(f"score_{backend}"), measured.get(f"forward_{backend}")
        if score and forward:
            ratios[f"score_{backend}_vs_forward"] = (
                score["audio_s_per_s"] / forward["audio_s_per_s"]
            )
        if score and "naive_torch" in measured:
            ratios[f"score_{backend}_vs_naive"] = (
                score["audio_s_per_s"] / measured["naive_torch"]["audio_s_per_s"]
            )
    figures["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    return figures


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of `asr score` (demo model, short clips) as the day grows."""
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="asr-bench-mem-") as tmp:
            scratch = Path(tmp)
            day = scratch / "day"
            audio_s = synthesize_day(day, size, 0.5, 1.0, seed=size)
            run = asr_score(DEMO_MODEL, day, "torch", scratch)
        results.append(
            {
                "phrases": size,
                "audio_seconds": round(audio_s, 1),
                "wall_s": round(run["wall_s"], 2),
                "audio_s_per_s": round(audio_s / run["wall_s"], 1),
                "peak_rss_mb": round(run["peak_rss_mb"], 1),
                "stages_s": run["stages_s"],
            }
        )
        print(f"  {size} phrases: {results[-1]}", flush=True)
    base = results[0]["peak_rss_mb"]
    return {
        "model": "demo",
        "sizes": results,
        "peak_rss_vs_smallest": [round(r["peak_rss_mb"] / base, 3) for r in results],
    }


def report(figures: dict[str, Any]) -> None:
    if "sizes" in figures:
        print(f"{'phrases':>8} {'audio_s':>8} {'wall_s':>7} {'audio-s/s':>10} {'peak_MB':>8}")
        for row in figures["sizes"]:
            print(
                f"{row['phrases']:>8} {row['audio_seconds']:>8.0f} {row['wall_s']:>7.1f} "
                f"{row['audio_s_per_s']:>10.1f} {row['peak_rss_mb']:>8.0f}"
            )
        print("peak RSS vs smallest:", figures["peak_rss_vs_smallest"])
        return
    print(
        f"{figures['model']} model, {figures['phrases']} phrases, "
        f"{figures['audio_seconds']} audio-s, median of {figures['rounds']} round(s)"
    )
    print(f"{'measure':<16} {'seconds':>8} {'audio-s/s':>10} {'peak_MB':>8}  stages (s)")
    for name, entry in figures["measured"].items():
        peak = entry.get("peak_rss_mb")
        stages = entry.get("stages_s", "")
        print(
            f"{name:<16} {entry['seconds']:>8.2f} {entry['audio_s_per_s']:>10.1f} "
            f"{'-' if peak is None else str(round(peak)):>8}  {stages}"
        )
    for name, value in figures["ratios"].items():
        print(f"{name:<28} {value:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--model", choices=("base", "demo"), default="base")
    parser.add_argument("--phrases", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backends", default="torch,onnx,int8")
    parser.add_argument("--min-seconds", type=float, default=1.5)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument(
        "--naive",
        action="store_true",
        help="run the naive loop even when torch is not among the backends",
    )
    parser.add_argument("--memory", action="store_true", help="peak RSS as the day grows")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads for every measure (0: default)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args([] if argv is None and __name__ != "__main__" else argv)
    global THREADS
    THREADS = args.threads
    figures = memory(args) if args.memory else throughput(args)
    report(figures)
    out = args.out or OUT / ("memory.json" if args.memory else f"throughput-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
