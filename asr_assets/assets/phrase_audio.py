"""`phrase_audio`: fetch, decode, normalise and validate each recording; cache the clip."""

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from pydantic import Field

from asr_assets.assets.common import (
    StageSummary,
    carried_error,
    error_fields,
    key_fields,
    summary_metadata,
)
from asr_assets.assets.instrumentation import PartitionRecord, each_partition, stage_scope
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.core.audio import (
    TARGET_SAMPLE_RATE,
    AudioPolicy,
    clip_cache_key,
    decode_audio,
    decode_clip,
    encode_clip,
    rms_dbfs,
)
from asr_assets.core.errors import PhraseError, ReasonCode, Stage
from asr_assets.core.storage import UnsafeKeyError, clip_key, stage_table_key
from asr_assets.core.tables import ACTIVITIES_SCHEMA, PHRASE_AUDIO_SCHEMA
from asr_assets.observability.logging import get_logger, in_current_context
from asr_assets.resources.object_store import ObjectNotFoundError, ObjectStore

log = get_logger(__name__)


class PhraseAudioConfig(dg.Config):
    """Validation thresholds; defaults suit read-aloud phrases of a few letters."""

    min_duration_s: float = Field(default=AudioPolicy.min_duration_s, gt=0)
    max_duration_s: float = Field(default=AudioPolicy.max_duration_s, gt=0)
    silence_rms_dbfs: float = Field(default=AudioPolicy.silence_rms_dbfs)
    max_clipped_fraction: float = Field(default=AudioPolicy.max_clipped_fraction, ge=0, le=1)
    max_object_mb: float = Field(default=200.0, gt=0, description="Larger objects are refused.")
    workers: int = Field(default=4, ge=1, le=64, description="Concurrent fetch+decode tasks.")
    min_speech_probability: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Voice activity (silero VAD, highest window probability) a clip must reach, "
        "else `audio_no_speech`; 0 (default) switches the check off, 0.5 suits real recordings.",
    )

    def policy(self) -> AudioPolicy:
        return AudioPolicy(
            min_duration_s=self.min_duration_s,
            max_duration_s=self.max_duration_s,
            silence_rms_dbfs=self.silence_rms_dbfs,
            max_clipped_fraction=self.max_clipped_fraction,
            min_speech_probability=self.min_speech_probability or None,
        )


def prepare_clip(
    store: ObjectStore,
    row: Mapping[str, object],
    policy: AudioPolicy,
    max_object_bytes: int,
) -> dict[str, object]:
    """Fetch and normalise one phrase's audio; return its stage row (ok or error)."""
    key = str(row["audio_key"])
    start_s = row.get("audio_start_s")
    end_s = row.get("audio_end_s")
    started = time.perf_counter()
    try:
        try:
            size = store.size(key)
        except UnsafeKeyError as exc:
            # The key passed validation but resolves outside the store (a symlink).
            raise PhraseError(ReasonCode.UNSAFE_AUDIO_KEY, str(exc)) from exc
        if size is None:
            raise PhraseError(ReasonCode.AUDIO_MISSING, "audio object does not exist")
        if size > max_object_bytes:
            raise PhraseError(
                ReasonCode.AUDIO_TOO_LARGE, f"{size} bytes exceeds the {max_object_bytes} limit"
            )
        try:
            data = store.read_bytes(key)
        except ObjectNotFoundError as exc:
            raise PhraseError(ReasonCode.AUDIO_MISSING, "audio object disappeared") from exc
        sha = clip_cache_key(data, start_s, end_s)  # type: ignore[arg-type]
        target = clip_key(sha)
        if store.exists(target):
            samples = decode_clip(store.read_bytes(target))
            info = {
                "source_format": None,
                "source_sample_rate": None,
                "source_channels": None,
                "peak": float(abs(samples).max()) if samples.size else 0.0,
                "rms_dbfs": rms_dbfs(samples),
                "cached": True,
            }
        else:
            decoded = decode_audio(data, start_s=start_s, end_s=end_s, policy=policy)  # type: ignore[arg-type]
            samples = decoded.samples
            store.write_bytes(target, encode_clip(samples))
            info = {
                "source_format": decoded.source_format,
                "source_sample_rate": decoded.source_sample_rate,
                "source_channels": decoded.source_channels,
                "peak": decoded.peak,
                "rms_dbfs": decoded.rms_dbfs,
                "cached": False,
            }
        log.debug(
            "phrase_audio_ready",
            activity_id=row["activity_id"],
            phrase_index=row["phrase_index"],
            status="cached" if info["cached"] else "ok",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        return {
            **key_fields(row),
            "clip_key": target,
            "clip_sha256": sha,
            "num_samples": int(samples.size),
            "duration_s": samples.size / TARGET_SAMPLE_RATE,
            **info,
        }
    except PhraseError as exc:
        log.debug(
            "phrase_rejected",
            activity_id=row["activity_id"],
            phrase_index=row["phrase_index"],
            status="errored",
            reason=exc.reason.value,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        return {**key_fields(row), **error_fields(Stage.PHRASE_AUDIO, exc)}


def build_phrase_audio(
    store: ObjectStore, partition_key: str, config: PhraseAudioConfig
) -> StageSummary:
    summary = StageSummary(Stage.PHRASE_AUDIO, partition_key)
    started = time.perf_counter()
    policy = config.policy()
    max_bytes = int(config.max_object_mb * 1024 * 1024)

    def process(row: dict[str, object]) -> dict[str, object]:
        carried = carried_error(row)
        if carried is not None:
            return {**key_fields(row), **carried}
        return prepare_clip(store, row, policy, max_bytes)

    audio_seconds = 0.0
    clips_cached = 0
    # The day streams through in chunks: about `workers` decoded clips and one chunk of rows are
    # alive at once, whatever the size of the partition (Executor.map would submit every phrase
    # up front), and the output is written as row groups of the same chunks.
    chunk = config.workers * 4
    # Workers log and call S3 for the stage: they carry its log context and span.
    task = in_current_context(process)
    with (
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="phrase-audio") as pool,
        store.table_writer(
            stage_table_key(Stage.PHRASE_AUDIO, partition_key), PHRASE_AUDIO_SCHEMA
        ) as output,
    ):
        for batch in store.iter_table(
            stage_table_key(Stage.ACTIVITIES, partition_key), ACTIVITIES_SCHEMA, batch_rows=1024
        ):
            records = batch.to_pylist()
            for offset in range(0, len(records), chunk):
                for row in pool.map(task, records[offset : offset + chunk]):
                    output.append(row)
                    summary.phrases_in += 1
                    reason = row.get("error_reason")
                    if reason is not None:
                        summary.count_errors([reason])  # type: ignore[list-item]
                    else:
                        audio_seconds += float(row["duration_s"])  # type: ignore[arg-type]
                        clips_cached += bool(row.get("cached"))
                    if len(summary.preview) < 10:
                        summary.preview.append(
                            {
                                "activity_id": row["activity_id"],
                                "phrase_index": row["phrase_index"],
                                "duration_s": row.get("duration_s"),
                                "error": reason,
                            }
                        )
    summary.phrases_errored = sum(summary.errors_by_reason.values())
    summary.phrases_ok = summary.phrases_in - summary.phrases_errored
    summary.extra["audio_seconds"] = round(audio_seconds, 2)
    summary.extra["clips_cached"] = clips_cached
    summary.timings_ms["fetch_decode"] = (time.perf_counter() - started) * 1000
    summary.check_reconciles()
    return summary


@letter_scoring_asset(
    deps=["activities"],
    kinds={"audio", "flac"},
    description="Each phrase's recording decoded to 16 kHz mono, validated, cached as 16-bit PCM.",
)
def phrase_audio(
    context: dg.AssetExecutionContext, config: PhraseAudioConfig, store: ObjectStore
) -> dg.MaterializeResult:
    def build(key: str, record: PartitionRecord) -> StageSummary:
        summary = build_phrase_audio(store, key, config)
        record.attributes.update(store.trace_attributes())
        return summary

    with stage_scope(context, Stage.PHRASE_AUDIO):
        summaries = each_partition(context, Stage.PHRASE_AUDIO, build)
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
