"""`letter-scoring:1`: the daily graph's letter scoring as a workload over a manifest.

Each manifest row names an audio key and its `expected_text`; the output has one row per file
with the phrase roll-up and its letters. The steps are the daily graph's own, from `core/` and
`inference/` (decode and validate, 16-bit clip, CTC emissions, greedy decoding, float16 emissions
for alignment, `score_phrase`), so a job and the daily graph agree on the same audio.

Run by the platform as `python -m asr_assets.platform.workloads.letter_scoring`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from dagster_pipes import PipesContext

from asr_assets.core.alignment import SpanMode
from asr_assets.core.audio import TARGET_SAMPLE_RATE, decode_clip, encode_clip
from asr_assets.core.batching import plan_batches
from asr_assets.core.decoding import greedy_decode
from asr_assets.core.errors import PhraseError, ReasonCode
from asr_assets.core.models import EXPECTED_TEXT_PATTERN, ModelInfo, Transcript
from asr_assets.core.scoring import (
    DEFAULT_ACCEPT_SUPPORT,
    DEFAULT_POLICY,
    Calibration,
    DecisionPolicy,
    Judgement,
    score_phrase,
)
from asr_assets.inference.base import Emissions, InferenceEngine, InferenceError
from asr_assets.inference.model_dir import read_calibration
from asr_assets.platform.workloads.runtime import (
    ShardSpec,
    ShardTally,
    check_model,
    load_audio,
    model_dir_for,
    serve,
)
from asr_assets.resources.inference import (
    LOCAL_MAX_BATCH_SECONDS,
    LOCAL_MAX_BATCH_SIZE,
    open_local_engine,
)
from asr_assets.resources.object_store import ObjectStore

#: Files decoded and batched together; bounds the audio held in memory.
CHUNK_FILES = 64


def _error_row(row: Mapping[str, object], reason: str, message: str) -> dict[str, object]:
    return {
        "key": row["key"],
        "expected_text": row.get("expected_text"),
        "status": "error",
        "reason_code": reason,
        "message": message,
    }


def _infer(engine: InferenceEngine, clips: list[np.ndarray]) -> list[Emissions | PhraseError]:
    """A failed batch is retried clip by clip so one bad file fails alone (as in the graph)."""
    try:
        return list(engine.infer(clips))
    except InferenceError as batch_error:
        if len(clips) == 1:
            return [PhraseError(ReasonCode.INFERENCE_FAILED, str(batch_error))]
    outputs: list[Emissions | PhraseError] = []
    for clip in clips:
        try:
            outputs.extend(engine.infer([clip]))
        except InferenceError as exc:
            outputs.append(PhraseError(ReasonCode.INFERENCE_FAILED, str(exc)))
    return outputs


def score_file(
    row: Mapping[str, object],
    samples: np.ndarray,
    emissions: Emissions,
    engine: InferenceEngine,
    model: ModelInfo,
    span_mode: SpanMode,
    accept_support: float | None,
    policy: DecisionPolicy | None = DEFAULT_POLICY,
) -> dict[str, object]:
    decoded = greedy_decode(emissions.log_probs, engine.vocabulary, robust=True)
    transcript = Transcript(
        activity_id=str(row["key"])[:256],
        phrase_index=0,
        letters=decoded.letters,
        confidences=decoded.confidences,
        frame_spans=decoded.frame_spans,
        emissions_key="",
        num_frames=emissions.num_frames,
        frame_duration_s=emissions.frame_duration_s,
        engine=engine.name,
        inference_ms=0.0,
    )
    expected = str(row["expected_text"]).split(" ")
    # The graph aligns on the float16 emissions it stores; so does the workload.
    stored = emissions.log_probs.astype(np.float16).astype(np.float32)
    scoring = score_phrase(
        expected,
        transcript,
        stored,
        engine.vocabulary,
        model,
        samples if span_mode is not SpanMode.ALIGNED else None,
        accept_support=accept_support,
        span_mode=span_mode,
        policy=policy,
    )
    letters = [
        {
            "letter_index": letter.letter_index,
            "expected": letter.expected,
            "recognized": letter.recognized,
            "status": letter.status.value,
            "confidence": letter.confidence,
            "start_s": letter.start_s,
            "end_s": letter.end_s,
            "alignment_score": letter.alignment_score,
            "unaligned_reason": None
            if letter.unaligned_reason is None
            else letter.unaligned_reason.value,
        }
        for letter in scoring.letters
    ]
    return {
        "key": row["key"],
        "expected_text": row["expected_text"],
        "status": "ok",
        "reason_code": None,
        "message": None,
        "transcript": decoded.text,
        "duration_s": samples.size / TARGET_SAMPLE_RATE,
        "n_expected": len(expected),
        "n_correct": scoring.n_correct,
        "n_inserted": scoring.n_inserted,
        "accuracy": scoring.accuracy,
        "alignment_method": scoring.method.value,
        "letters": letters,
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
    }


def judgement_policy(
    judgement: str, calibration: tuple[Calibration, Calibration] | None = None
) -> DecisionPolicy | None:
    """The daily graph's judgement (`AlignmentsConfig.judgement`, calibrated by default), so a
    job and the graph judge the same recording the same way; `params.judgement` overrides.
    `calibration` is the model's own (its `calibration.json`), as in the graph."""
    from asr_assets.assets.alignments import AlignmentsConfig

    return AlignmentsConfig(judgement=Judgement(judgement)).policy(calibration)


def process(
    spec: ShardSpec,
    store: ObjectStore,
    rows: Iterable[dict[str, object]],
    tally: ShardTally,
    pipes: PipesContext,
) -> Iterator[dict[str, object]]:
    model_dir, pinned = model_dir_for(spec)
    span_mode = SpanMode(spec.params.get("span_mode", SpanMode.AUTO.value))
    raw_support = spec.params.get("accept_support")
    accept_support = float(raw_support) if raw_support else DEFAULT_ACCEPT_SUPPORT
    policy = judgement_policy(
        spec.params.get("judgement", Judgement.CALIBRATED.value),
        read_calibration(Path(model_dir)),
    )
    engine = open_local_engine(
        str(Path(model_dir)),
        backend="torch",
        quantize_int8=False,
        onnx_path=None,
        onnx_cache_dir=None,
        num_threads=int(spec.params["threads"]) if spec.params.get("threads") else None,
        max_batch_size=LOCAL_MAX_BATCH_SIZE,
        max_batch_seconds=LOCAL_MAX_BATCH_SECONDS,
    )
    pipes.log.info(f"model {engine.model.name}@{engine.model.version}")
    try:
        check_model(pinned, engine.model.sha256)
        chunk: list[dict[str, object]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK_FILES:
                yield from _score_chunk(
                    chunk, store, engine, tally, span_mode, accept_support, policy
                )
                chunk = []
        yield from _score_chunk(chunk, store, engine, tally, span_mode, accept_support, policy)
    finally:
        engine.close()


def _score_chunk(
    chunk: list[dict[str, object]],
    store: ObjectStore,
    engine: InferenceEngine,
    tally: ShardTally,
    span_mode: SpanMode,
    accept_support: float | None,
    policy: DecisionPolicy | None,
) -> Iterator[dict[str, object]]:
    results: dict[int, dict[str, object]] = {}
    clips: dict[int, np.ndarray] = {}
    for position, row in enumerate(chunk):
        if not EXPECTED_TEXT_PATTERN.fullmatch(str(row.get("expected_text") or "")):
            results[position] = _error_row(
                row, ReasonCode.INVALID_EXPECTED_TEXT, "expected_text must be letters a-z"
            )
            continue
        try:
            decoded = load_audio(store, str(row["key"]), tally)
        except PhraseError as exc:
            results[position] = _error_row(row, exc.reason, exc.message)
            continue
        # The graph scores the 16-bit FLAC clip it caches; round-trip to the same samples.
        clips[position] = decode_clip(encode_clip(decoded.samples))
        tally.audio_seconds += decoded.duration_s
    pending = sorted(clips)
    plans = plan_batches(
        [int(clips[p].size) for p in pending],
        max_batch_size=engine.max_batch_size,
        max_batch_samples=engine.max_batch_samples,
    )
    for plan in plans:
        members = [pending[i] for i in plan.indices]
        outputs = _infer(engine, [clips[p] for p in members])
        for position, output in zip(members, outputs, strict=True):
            if isinstance(output, PhraseError):
                results[position] = _error_row(chunk[position], output.reason, output.message)
                continue
            results[position] = score_file(
                chunk[position],
                clips[position],
                output,
                engine,
                engine.model,
                span_mode,
                accept_support,
                policy,
            )
    for position in range(len(chunk)):
        yield results[position]


def main() -> None:
    serve(process)


if __name__ == "__main__":
    main()
