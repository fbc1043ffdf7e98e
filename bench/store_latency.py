"""Store latency absorbed: 1 s on 20% of per-phrase requests, `transcripts` + `alignments`.

The same 24 phrases (a stand-in engine, so only I/O differs) with `io_workers=1` (requests
one at a time, as before) and `io_workers=8`, interleaved; prints seconds and the ratio.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import tests.unit.test_stage_io_concurrency as stage
from asr_assets.assets.alignments import AlignmentsConfig, build_alignments
from asr_assets.assets.transcripts import TranscriptsConfig, build_transcripts

RNG = random.Random(0)


def _latency() -> float:
    return 1.0 if RNG.random() < 0.2 else 0.0


class FaultyStore(stage.LocalObjectStore):
    """1 s on 20% of per-phrase reads and writes (clips, emissions)."""

    def read_bytes(self, key: str) -> bytes:
        if key.startswith("cache/"):
            time.sleep(_latency())
        return super().read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.startswith("cache/"):
            time.sleep(_latency())
        super().write_bytes(key, data)


def main() -> None:
    seconds: dict[int, list[float]] = {}
    for workers in (1, 8, 1, 8):
        with tempfile.TemporaryDirectory() as directory:
            stage.write_phrase_audio(Path(directory))
            store = FaultyStore(root=directory, min_free_bytes=0)
            started = time.perf_counter()
            build_transcripts(
                store,
                stage.LetterCoveringEngine(),
                stage.PARTITION,
                TranscriptsConfig(io_workers=workers, reuse_emissions=False),
            )
            build_alignments(
                store,
                stage.LetterCoveringEngine.vocabulary,
                stage.PARTITION,
                AlignmentsConfig(io_workers=workers),
            )
            seconds.setdefault(workers, []).append(round(time.perf_counter() - started, 2))
    ratios = [round(a / b, 1) for a, b in zip(seconds[1], seconds[8], strict=True)]
    print(f"24 phrases: io_workers=1 {seconds[1]} s, io_workers=8 {seconds[8]} s -> {ratios}x")


if __name__ == "__main__":
    main()
