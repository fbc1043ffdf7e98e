"""End-to-end throughput and peak memory as a partition grows (embedded defaults, CPU).

DESIGN.md asks that a partition's memory not grow with its size: audio and emissions stream
through the store in bounded batches. Each size runs in a fresh subprocess so its peak RSS is
its own; the smallest size is the baseline for the ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = (50, 400, 1600)
DAY = "2026-11-27"

CHILD = r"""
import json, resource, sys, time
from datetime import date
from pathlib import Path
import dagster as dg
from asr_assets.definitions import ALL_ASSETS, build_definitions
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

root, model, n, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "generate":
    letters = "bdpqmnckseigj"
    phrases = []
    for i in range(n):
        text = " ".join(letters[(i + k) % len(letters)] for k in range(2 + i % 6))
        audio = wav_bytes(tone(1.0 + (i % 7) * 0.5, freq=150 + (i % 9) * 20))
        phrases.append(PhraseSpec(f"act-{i // 5}", i % 5, text, audio, f"audio/{i}.wav"))
    write_day(root, date(2026, 11, 27), phrases)
    print(json.dumps({}))
    sys.exit(0)
definitions = build_definitions({"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": model})
started = time.perf_counter()
with dg.instance_for_test() as instance:
    result = dg.materialize(ALL_ASSETS, partition_key="2026-11-27",
                            resources=definitions.resources, instance=instance)
elapsed = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ok": result.success, "seconds": elapsed, "peak_mb": peak_mb}))
"""


def run_size(model_dir: Path, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        # Data is generated in its own process so the measured peak is the pipeline's alone.
        for mode in ("generate", "run"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, root, str(model_dir), str(size), mode],
                capture_output=True,
                text=True,
                check=True,
            )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from tests.support.models import build_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_tiny_model(Path(scratch) / "tiny")
        print("tiny random Wav2Vec2ForCTC; phrases of 1-4 s of audio")
        print(f"{'phrases':>8} {'seconds':>8} {'phrases/s':>10} {'peak_MB':>8} {'vs_smallest':>12}")
        baseline = None
        for size in SIZES:
            figures = run_size(model_dir, size)
            baseline = baseline or figures["peak_mb"]
            print(
                f"{size:>8} {figures['seconds']:>8.1f} {size / figures['seconds']:>10.1f} "
                f"{figures['peak_mb']:>8.0f} {figures['peak_mb'] / baseline:>11.2f}x"
            )


if __name__ == "__main__":
    main()
