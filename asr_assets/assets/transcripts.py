"""`transcripts`: CTC emissions per phrase (length-bucketed batches) and greedy decoding."""

import io
import struct
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg
import numpy as np
from pydantic import Field

from asr_assets.assets.common import (
    StageSummary,
    carried_error,
    error_fields,
    key_fields,
    summary_metadata,
)
from asr_assets.assets.instrumentation import (
    PartitionRecord,
    ProgressLog,
    each_partition,
    stage_scope,
)
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.core.audio import decode_clip
from asr_assets.core.batching import plan_batches
from asr_assets.core.decoding import DecodeError, greedy_decode
from asr_assets.core.errors import PhraseError, ReasonCode, Stage
from asr_assets.core.storage import emissions_key, stage_table_key
from asr_assets.core.tables import PHRASE_AUDIO_SCHEMA, TRANSCRIPTS_SCHEMA
from asr_assets.inference.base import Emissions, InferenceEngine, InferenceError
from asr_assets.observability.logging import get_logger, in_current_context
from asr_assets.observability.tracing import span
from asr_assets.resources.inference import InferenceResource
from asr_assets.resources.object_store import ObjectNotFoundError, ObjectStore

log = get_logger(__name__)


class TranscriptsConfig(dg.Config):
    robust_decoding: bool = Field(
        default=True, description="Tolerate doubled separators and similar model quirks."
    )
    reuse_emissions: bool = Field(
        default=True, description="Reuse stored emissions of the same model and audio."
    )
    io_workers: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Concurrent store reads and writes (clips, emissions), overlapped with "
        "inference: request latency is paid in parallel, not once per phrase in series.",
    )


#: Stored emissions: magic, frame duration (float64), frames and vocabulary (uint32), then
#: little-endian float16 log-probabilities, row-major.
EMISSIONS_MAGIC = b"ASREMI1\0"
_HEADER = struct.Struct("<8sdII")


def encode_emissions(emissions: Emissions) -> bytes:
    """float16 log-probabilities behind a 24-byte header.

    float16 halves the bytes with far more precision than decoding needs; a raw layout instead
    of an `.npz` archive costs microseconds per phrase, not a zip round trip.
    """
    log_probs = np.ascontiguousarray(emissions.log_probs, dtype="<f2")
    frames, vocabulary = log_probs.shape
    header = _HEADER.pack(EMISSIONS_MAGIC, float(emissions.frame_duration_s), frames, vocabulary)
    return header + log_probs.tobytes()


def decode_emissions(data: bytes) -> Emissions:
    """The header format above; `.npz` archives written by earlier versions still read."""
    if data[: len(EMISSIONS_MAGIC)] != EMISSIONS_MAGIC:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return Emissions(
                archive["log_probs"].astype(np.float32), float(archive["frame_duration_s"])
            )
    _, frame_duration_s, frames, vocabulary = _HEADER.unpack_from(data)
    expected = _HEADER.size + 2 * frames * vocabulary
    if len(data) != expected:
        raise ValueError(f"emissions are {len(data)} bytes, the header says {expected}")
    log_probs = np.frombuffer(data, dtype="<f2", offset=_HEADER.size).reshape(frames, vocabulary)
    return Emissions(log_probs.astype(np.float32), frame_duration_s)


def engine_names(engine: InferenceEngine, count: int) -> list[str]:
    """Which engine scored each clip of the engine's last `infer` call.

    A fallback engine can switch engines between calls (Triton down, local takes over), so the
    attribution is read after every call, per clip when the engine says (`last_engine_names`),
    else per call (`last_engine_name`), else its name.
    """
    names = getattr(engine, "last_engine_names", None)
    if isinstance(names, list) and len(names) == count:
        return [str(name) for name in names]
    return [str(getattr(engine, "last_engine_name", engine.name))] * count


def engine_device(engine: InferenceEngine) -> str:
    """Where the engine computes: its `device` when it says (cpu, triton), else cpu."""
    return str(getattr(engine, "device", "cpu"))


def engine_attributes(engine: InferenceEngine) -> dict[str, object]:
    """Span attributes naming the engine, its device, the model and the Triton model if any."""
    return {
        "asr.engine": engine.name,
        "asr.device": engine_device(engine),
        "asr.model": engine.model.name,
        "asr.model_version": engine.model.version,
        "asr.model_sha256": engine.model.sha256[:16],
        "asr.triton_model": getattr(engine, "triton_model", None),
    }


def _infer_isolating(
    engine: InferenceEngine, clips: Sequence[np.ndarray]
) -> list[tuple[Emissions | PhraseError, str]]:
    """Run a batch; if it fails, run its phrases one by one so one bad phrase fails alone.

    Each output comes with the name of the engine that produced it.
    """
    try:
        outputs = list(engine.infer(clips))
        return list(zip(outputs, engine_names(engine, len(outputs)), strict=True))
    except InferenceError as batch_error:
        if len(clips) == 1:
            return [(PhraseError(ReasonCode.INFERENCE_FAILED, str(batch_error)), engine.name)]
    results: list[tuple[Emissions | PhraseError, str]] = []
    for clip in clips:
        try:
            (output,) = engine.infer([clip])
            results.append((output, engine_names(engine, 1)[0]))
        except InferenceError as exc:
            results.append((PhraseError(ReasonCode.INFERENCE_FAILED, str(exc)), engine.name))
    return results


def transcript_row(
    row: Mapping[str, object],
    emissions: Emissions,
    key: str,
    engine_name: str,
    inference_ms: float,
    engine: InferenceEngine,
    robust: bool,
) -> dict[str, object]:
    try:
        decoded = greedy_decode(emissions.log_probs, engine.vocabulary, robust=robust)
    except DecodeError as exc:
        error = PhraseError(ReasonCode.INFERENCE_FAILED, f"decoding failed: {exc}")
        return {**key_fields(row), **error_fields(Stage.TRANSCRIPTS, error)}
    return {
        **key_fields(row),
        "clip_key": row["clip_key"],
        "duration_s": row["duration_s"],
        "transcript": decoded.text,
        "letters": decoded.letters,
        "confidences": decoded.confidences,
        "frame_starts": [s for s, _ in decoded.frame_spans],
        "frame_ends": [e for _, e in decoded.frame_spans],
        "anomalies": decoded.anomalies,
        "emissions_key": key,
        "num_frames": emissions.num_frames,
        "frame_duration_s": emissions.frame_duration_s,
        "engine": engine_name,
        "inference_ms": round(inference_ms, 3),
        "model_name": engine.model.name,
        "model_version": engine.model.version,
        "model_sha256": engine.model.sha256,
    }


#: Phrases planned, inferred and written together. Batches are sorted by length within a chunk
#: (4,096 phrases sort as well as a whole day: the padding measured the same), and a chunk's
#: rows are written as one row group, so memory stays flat as the day grows.
CHUNK_PHRASES = 4096


def build_transcripts(
    store: ObjectStore,
    engine: InferenceEngine,
    partition_key: str,
    config: TranscriptsConfig,
    *,
    chunk_phrases: int = CHUNK_PHRASES,
) -> StageSummary:
    summary = StageSummary(Stage.TRANSCRIPTS, partition_key)
    engines: Counter[str] = Counter()
    numerics = str(getattr(engine, "numerics", "fp32"))
    started = time.perf_counter()
    inference_total = 0.0
    batches = 0
    workers = config.io_workers
    # Reads run on the I/O pool ahead of inference: whole batches are submitted while fewer than
    # `window` reads are outstanding (at least one batch ahead), so one slow request delays its
    # own batch only, not every batch behind it, and the decoded audio alive stays about
    # `window` clips. Emissions are written by the same pool; the oldest writes are collected
    # once more than `window` are pending. Inference stays on this thread, in plan order.
    window = 4 * workers

    def key_for(row: Mapping[str, object]) -> str:
        return emissions_key(engine.model.sha256, str(row["clip_sha256"]), numerics)

    def load(row: Mapping[str, object]) -> Emissions | np.ndarray:
        """Stored emissions of the same model and audio when reusable, else the decoded clip."""
        if config.reuse_emissions:
            try:
                return decode_emissions(store.read_bytes(key_for(row)))
            except ObjectNotFoundError:
                # Not computed yet: one read instead of an existence check plus a read.
                log.debug("emissions_not_cached", activity_id=row["activity_id"])
        return decode_clip(store.read_bytes(str(row["clip_key"])))

    def store_emissions(row: Mapping[str, object], output: Emissions) -> None:
        store.write_bytes(key_for(row), encode_emissions(output))

    task = in_current_context(load)
    write_task = in_current_context(store_emissions)

    def transcribe_chunk(
        audio: list[dict[str, object]], io_pool: ThreadPoolExecutor, writes: deque[Future[None]]
    ) -> list[dict[str, object]]:
        """The chunk's output rows, in input order."""
        nonlocal inference_total, batches
        results: dict[int, dict[str, object]] = {}
        pending: list[int] = []
        for position, row in enumerate(audio):
            carried = carried_error(row)
            if carried is not None:
                results[position] = {**key_fields(row), **carried}
            else:
                pending.append(position)
        plans = plan_batches(
            [int(audio[p]["num_samples"]) for p in pending],  # type: ignore[call-overload]
            max_batch_size=engine.max_batch_size,
            max_batch_samples=engine.max_batch_samples,
        )
        batches += len(plans)
        batch_members = [[pending[i] for i in plan.indices] for plan in plans]
        submitted: deque[list[Future[Emissions | np.ndarray]]] = deque()
        next_batch = 0
        for index, plan in enumerate(plans):
            members = batch_members[index]
            while next_batch < len(plans) and (
                next_batch <= index + 1 or sum(len(b) for b in submitted) < window
            ):
                submitted.append(
                    [io_pool.submit(task, audio[p]) for p in batch_members[next_batch]]
                )
                next_batch += 1
            loaded = [future.result() for future in submitted.popleft()]
            to_run = [
                p for p, item in zip(members, loaded, strict=True) if isinstance(item, np.ndarray)
            ]
            clips = [item for item in loaded if isinstance(item, np.ndarray)]
            batch_ms = 0.0
            outputs: list[tuple[Emissions | PhraseError, str]] = []
            if to_run:
                with span(
                    "asr.inference.batch",
                    {
                        **engine_attributes(engine),
                        "asr.batch_size": len(clips),
                        "asr.batch_samples": sum(int(c.size) for c in clips),
                        "asr.padded_samples": plan.padded_length,
                        "asr.activity_count": len({audio[p]["activity_id"] for p in to_run}),
                    },
                ) as batch_span:
                    batch_started = time.perf_counter()
                    outputs = _infer_isolating(engine, clips)
                    batch_ms = (time.perf_counter() - batch_started) * 1000
                    scored_by = sorted({name for _, name in outputs})
                    batch_span.set_attribute("asr.scored_by", ",".join(scored_by))
                    batch_span.set_attribute(
                        "asr.failed", sum(isinstance(o, PhraseError) for o, _ in outputs)
                    )
                inference_total += batch_ms
                del clips
            while len(writes) > window:  # failures surface, pending writes stay bounded
                writes.popleft().result()
            per_phrase_ms = batch_ms / max(1, len(to_run))
            for position, (output, engine_name) in zip(to_run, outputs, strict=True):
                row = audio[position]
                if isinstance(output, PhraseError):
                    results[position] = {
                        **key_fields(row),
                        **error_fields(Stage.TRANSCRIPTS, output),
                    }
                    continue
                writes.append(io_pool.submit(write_task, row, output))
                results[position] = transcript_row(
                    row,
                    output,
                    key_for(row),
                    engine_name,
                    per_phrase_ms,
                    engine,
                    config.robust_decoding,
                )
                engines[engine_name] += 1
                log.debug(
                    "phrase_transcribed",
                    activity_id=row["activity_id"],
                    phrase_index=row["phrase_index"],
                    status="errored" if "error_reason" in results[position] else "ok",
                    engine=engine_name,
                    latency_ms=per_phrase_ms,
                )
            for position, item in zip(members, loaded, strict=True):
                if isinstance(item, Emissions):
                    results[position] = transcript_row(
                        audio[position],
                        item,
                        key_for(audio[position]),
                        "cache",
                        0.0,
                        engine,
                        config.robust_decoding,
                    )
                    engines["cache"] += 1
            progress.update(summary.phrases_in + len(results))
        return [results[position] for position in range(len(audio))]

    source = store.open_table(
        stage_table_key(Stage.PHRASE_AUDIO, partition_key), PHRASE_AUDIO_SCHEMA
    )
    progress = ProgressLog(log, source.num_rows)
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transcripts-io") as io_pool,
        store.table_writer(
            stage_table_key(Stage.TRANSCRIPTS, partition_key), TRANSCRIPTS_SCHEMA
        ) as output,
    ):
        writes: deque[Future[None]] = deque()
        for batch in source.batches(chunk_phrases):
            rows = transcribe_chunk(batch.to_pylist(), io_pool, writes)
            output.extend(rows)
            summary.phrases_in += len(rows)
            summary.count_errors(row.get("error_reason") for row in rows)  # type: ignore[misc]
            for r in rows[: 10 - len(summary.preview)]:
                summary.preview.append(
                    {
                        "activity_id": r["activity_id"],
                        "phrase_index": r["phrase_index"],
                        "expected": r.get("expected_text"),
                        "transcript": r.get("transcript"),
                        "error": r.get("error_reason"),
                    }
                )
        # Every emission is stored before the table that names it exists.
        for write in writes:
            write.result()
    summary.phrases_errored = sum(summary.errors_by_reason.values())
    summary.phrases_ok = summary.phrases_in - summary.phrases_errored
    summary.timings_ms["stage"] = (time.perf_counter() - started) * 1000
    summary.timings_ms["inference"] = inference_total
    summary.extra["batches"] = batches
    summary.extra["phrases_by_engine"] = dict(engines)
    report = getattr(engine, "fallback_report", None)
    if callable(report):
        summary.extra["inference_fallback"] = report()
    summary.extra["model"] = f"{engine.model.name}@{engine.model.version}"
    summary.check_reconciles()
    return summary


@letter_scoring_asset(
    deps=["phrase_audio"],
    kinds={"pytorch"},
    description="CTC emissions (float16, stored per model and clip) and greedy transcripts.",
)
def transcripts(
    context: dg.AssetExecutionContext,
    config: TranscriptsConfig,
    store: ObjectStore,
    inference: InferenceResource,
) -> dg.MaterializeResult:
    with stage_scope(context, Stage.TRANSCRIPTS), inference.open_engine() as engine:

        def build(key: str, record: PartitionRecord) -> StageSummary:
            summary = build_transcripts(store, engine, key, config)
            record.model = f"{engine.model.name}@{engine.model.version}"
            record.device = engine_device(engine)
            record.attributes.update(engine_attributes(engine))
            return summary

        summaries = each_partition(context, Stage.TRANSCRIPTS, build)
    fallback = summaries[-1].extra.get("inference_fallback") if summaries else None
    if isinstance(fallback, dict) and fallback.get("fell_back"):
        context.log.warning(
            f"inference fell back from {fallback.get('primary')} to the local engine "
            f"({fallback.get('last_fallback_reason')}); phrases by engine: "
            f"{[s.extra.get('phrases_by_engine') for s in summaries]}"
        )
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
