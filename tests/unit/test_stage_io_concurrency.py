"""Per-phrase store I/O in `transcripts` and `alignments` is bounded-concurrent, not serial.

A store with injected latency counts the most requests in flight at once: serial stages never
exceed one, so request latency is paid once per phrase in series (13x slower under S3 faults).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from asr_assets.assets.alignments import AlignmentsConfig, build_alignments
from asr_assets.assets.transcripts import (
    TranscriptsConfig,
    build_transcripts,
    decode_emissions,
    encode_emissions,
)
from asr_assets.core.alignment import SpanMode
from asr_assets.core.audio import encode_clip
from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.errors import Stage
from asr_assets.core.models import ModelInfo
from asr_assets.core.storage import stage_table_key
from asr_assets.core.tables import PHRASE_AUDIO_SCHEMA, to_table
from asr_assets.inference.base import Emissions
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.models import VOCAB

PARTITION = "2026-11-02"
LATENCY_S = 0.05
PHRASES = 24
STRIDE = 320


class Requests:
    """What the store saw: requests by kind and the most in flight at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.by_kind: Counter[str] = Counter()

    def enter(self, kind: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.by_kind[kind] += 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


REQUESTS = Requests()


def _kind(key: str) -> str:
    return key.split("/")[1] if key.startswith("cache/") else "table"


class SlowStore(LocalObjectStore):
    """The local store with every per-phrase read and write taking `LATENCY_S`."""

    def read_bytes(self, key: str) -> bytes:
        REQUESTS.enter(f"read:{_kind(key)}")
        try:
            time.sleep(LATENCY_S if key.startswith("cache/") else 0)
            return super().read_bytes(key)
        finally:
            REQUESTS.leave()

    def write_bytes(self, key: str, data: bytes) -> None:
        REQUESTS.enter(f"write:{_kind(key)}")
        try:
            time.sleep(LATENCY_S if key.startswith("cache/") else 0)
            super().write_bytes(key, data)
        finally:
            REQUESTS.leave()


class LetterCoveringEngine:
    """Emissions in which each letter of "b d p" covers a third of the clip (a covering model)."""

    name = "covering"
    device = "cpu"
    model = ModelInfo(name="covering", version="1", sha256="c" * 64)
    vocabulary = CtcVocabulary.from_vocab(VOCAB)
    max_batch_size = 4
    max_batch_samples = 16_000 * 60

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        outputs = []
        for clip in clips:
            frames = max(12, clip.size // STRIDE)
            probs = np.full((frames, len(VOCAB)), 0.01 / (len(VOCAB) - 1), dtype=np.float32)
            for index, letter in enumerate("bdp"):
                probs[index * frames // 3 : (index + 1) * frames // 3, VOCAB[letter]] = 0.99
            outputs.append(Emissions(np.log(probs), STRIDE / 16_000))
        return outputs

    def close(self) -> None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> SlowStore:
    REQUESTS.__init__()  # one count per test
    write_phrase_audio(tmp_path)
    return SlowStore(root=str(tmp_path), min_free_bytes=0)


def write_phrase_audio(root: Path) -> None:
    """The `phrase_audio` stage table and its clips, written without latency."""
    setup = LocalObjectStore(root=str(root), min_free_bytes=0)
    rows = []
    for index in range(PHRASES):
        samples = (0.1 * np.sin(np.arange(16_000 + 160 * index) / 7.0)).astype(np.float32)
        sha = f"{index:064x}"
        setup.write_bytes(f"cache/audio/{sha[:2]}/{sha}.flac", encode_clip(samples))
        rows.append(
            {
                "activity_id": f"act-{index // 4}",
                "phrase_index": index % 4,
                "tenant_id": "tenant-a",
                "activity_date": date(2026, 11, 2),
                "expected_text": "b d p",
                "clip_key": f"cache/audio/{sha[:2]}/{sha}.flac",
                "clip_sha256": sha,
                "num_samples": samples.size,
                "duration_s": samples.size / 16_000,
            }
        )
    setup.write_table(
        stage_table_key(Stage.PHRASE_AUDIO, PARTITION), to_table(rows, PHRASE_AUDIO_SCHEMA)
    )


def test_transcripts_reads_and_writes_concurrently(store: SlowStore) -> None:
    config = TranscriptsConfig(io_workers=8)
    summary = build_transcripts(store, LetterCoveringEngine(), PARTITION, config)
    assert summary.phrases_ok == PHRASES
    assert REQUESTS.by_kind["read:audio"] == PHRASES
    assert REQUESTS.by_kind["write:emissions"] == PHRASES
    assert REQUESTS.peak >= 4


def test_transcripts_reuses_stored_emissions_with_one_request_each(store: SlowStore) -> None:
    build_transcripts(store, LetterCoveringEngine(), PARTITION, TranscriptsConfig())
    REQUESTS.__init__()
    summary = build_transcripts(store, LetterCoveringEngine(), PARTITION, TranscriptsConfig())
    assert summary.extra["phrases_by_engine"] == {"cache": PHRASES}
    assert REQUESTS.by_kind["read:emissions"] == PHRASES
    assert REQUESTS.by_kind["read:audio"] == 0 and REQUESTS.by_kind["write:emissions"] == 0


@pytest.mark.parametrize("span_mode", [SpanMode.AUTO, SpanMode.ALIGNED])
def test_alignments_read_concurrently_and_skip_audio_the_span_mode_does_not_need(
    store: SlowStore, span_mode: SpanMode
) -> None:
    build_transcripts(store, LetterCoveringEngine(), PARTITION, TranscriptsConfig())
    REQUESTS.__init__()
    config = AlignmentsConfig(io_workers=8, span_mode=span_mode)
    summary = build_alignments(store, LetterCoveringEngine.vocabulary, PARTITION, config)
    assert summary.phrases_ok == PHRASES
    assert summary.extra["letters_by_status"] == {"correct": 3 * PHRASES}
    assert REQUESTS.by_kind["read:emissions"] == PHRASES
    # Covering spans resolve AUTO to ALIGNED: the clip is neither fetched nor decoded.
    assert REQUESTS.by_kind["read:audio"] == 0
    assert REQUESTS.peak >= 4


def test_alignments_fetch_audio_when_energy_spans_need_it(store: SlowStore) -> None:
    build_transcripts(store, LetterCoveringEngine(), PARTITION, TranscriptsConfig())
    REQUESTS.__init__()
    config = AlignmentsConfig(span_mode=SpanMode.ENERGY)
    summary = build_alignments(store, LetterCoveringEngine.vocabulary, PARTITION, config)
    assert summary.phrases_ok == PHRASES
    assert REQUESTS.by_kind["read:audio"] == PHRASES
    # Clips are fetched by the pool while later phrases align, not one at a time in series.
    assert REQUESTS.peak >= 4


def test_alignments_score_on_the_stage_thread_and_keep_input_order(
    store: SlowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight pool threads scoring at once contended for the GIL: the stage took twice as long
    as on one thread (1.5 vs 0.75 s for 204 phrases). The pool does store I/O; scoring stays on
    the stage's own thread, and rows keep the transcripts' order whatever finishes first."""
    import asr_assets.assets.alignments as alignments

    build_transcripts(store, LetterCoveringEngine(), PARTITION, TranscriptsConfig())
    threads: set[str] = set()
    real = alignments.score_phrase

    def recording(*args: object, **kwargs: object) -> object:
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(alignments, "score_phrase", recording)
    config = AlignmentsConfig(io_workers=8, span_mode=SpanMode.ENERGY)
    summary = build_alignments(store, LetterCoveringEngine.vocabulary, PARTITION, config)
    assert summary.phrases_ok == PHRASES
    assert threads == {threading.current_thread().name}
    phrases = store.read_table(
        stage_table_key(Stage.ALIGNMENTS, PARTITION, "phrase_results")
    ).to_pylist()
    assert [(p["activity_id"], p["phrase_index"]) for p in phrases] == [
        (f"act-{index // 4}", index % 4) for index in range(PHRASES)
    ]


def test_a_clip_lost_before_energy_spans_is_that_phrase_error_not_the_stage(
    store: SlowStore,
) -> None:
    build_transcripts(store, LetterCoveringEngine(), PARTITION, TranscriptsConfig())
    lost = f"cache/audio/00/{3:064x}.flac"
    (Path(store.root) / lost).unlink()
    config = AlignmentsConfig(span_mode=SpanMode.ENERGY)
    summary = build_alignments(store, LetterCoveringEngine.vocabulary, PARTITION, config)
    assert (summary.phrases_ok, summary.phrases_errored) == (PHRASES - 1, 1)
    (error,) = store.read_table(stage_table_key(Stage.ALIGNMENTS, PARTITION, "errors")).to_pylist()
    assert (error["activity_id"], error["phrase_index"]) == ("act-0", 3)
    assert (error["stage"], error["reason_code"]) == ("alignments", "audio_missing")


def test_emissions_round_trip_and_legacy_archives_still_read() -> None:
    import io

    rng = np.random.default_rng(0)
    emissions = Emissions(rng.standard_normal((37, 30)).astype(np.float32), 0.02)
    decoded = decode_emissions(encode_emissions(emissions))
    assert decoded.frame_duration_s == 0.02 and decoded.log_probs.dtype == np.float32
    np.testing.assert_array_equal(
        decoded.log_probs, emissions.log_probs.astype(np.float16).astype(np.float32)
    )
    legacy = io.BytesIO()
    np.savez(legacy, log_probs=emissions.log_probs.astype(np.float16), frame_duration_s=0.02)
    np.testing.assert_array_equal(decode_emissions(legacy.getvalue()).log_probs, decoded.log_probs)
    with pytest.raises(ValueError, match="header says"):
        decode_emissions(encode_emissions(emissions)[:-2])


def test_small_days_skip_the_compiler_large_days_use_the_kernel() -> None:
    from asr_assets.assets.alignments import COMPILED_ALIGNER_MIN_PHRASES, aligner_for
    from asr_assets.core.alignment import forced_align, forced_align_reference

    assert aligner_for(1) is forced_align_reference
    assert aligner_for(COMPILED_ALIGNER_MIN_PHRASES) is forced_align
