"""`alignments`: judge each expected letter (edit alignment) and time it (CTC forced alignment)."""

import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
from pydantic import Field

from asr_assets.assets.common import StageSummary, summary_metadata
from asr_assets.assets.instrumentation import PartitionRecord, each_partition, stage_scope
from asr_assets.assets.partitions import letter_scoring_asset
from asr_assets.assets.transcripts import decode_emissions
from asr_assets.core.alignment import SpanMode, TokenSpan, forced_align, forced_align_reference
from asr_assets.core.audio import decode_clip
from asr_assets.core.concurrency import bounded_map
from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.errors import PhraseError, ReasonCode, Stage
from asr_assets.core.models import ModelInfo, PhraseResult, Transcript
from asr_assets.core.scoring import (
    DEFAULT_ACCEPT_SUPPORT,
    DEFAULT_POLICY,
    RAW_POLICY,
    Calibration,
    DecisionPolicy,
    Judgement,
    score_phrase,
)
from asr_assets.core.storage import stage_table_key
from asr_assets.core.tables import (
    ERRORS_SCHEMA,
    LETTER_SCORES_SCHEMA,
    PHRASE_RESULTS_SCHEMA,
    TRANSCRIPTS_SCHEMA,
)
from asr_assets.observability.logging import get_logger, in_current_context
from asr_assets.resources.inference import InferenceResource
from asr_assets.resources.object_store import ObjectNotFoundError, ObjectStore

log = get_logger(__name__)


class AlignmentsConfig(dg.Config):
    span_mode: SpanMode = Field(
        default=SpanMode.AUTO,
        description="How letter times are reported: 'aligned' (forced-aligned frames as is), "
        "'energy' (widened to the pauses and trimmed to voiced frames of the clip, for spiky CTC "
        "models), or 'auto' (aligned unless the model's letter spans are spikes).",
    )
    accept_support: float | None = Field(
        default=DEFAULT_ACCEPT_SUPPORT,
        ge=0.0,
        le=1.0,
        description="A letter greedy decoding missed is judged correct when its own posterior "
        "near its aligned span reaches this; null keeps the greedy judgement. Used only by the "
        "'greedy' judgement.",
    )
    judgement: Judgement = Field(
        default=Judgement.CALIBRATED,
        description="'calibrated': statuses from calibrated probabilities, with an 'uncertain' "
        "band for teacher review and insertions reported only when likely real; 'greedy': the "
        "greedy transcript's edit alignment (plus accept_support); 'raw': greedy statuses with "
        "uncalibrated support as confidence (for fitting calibrations).",
    )
    review_low: float = Field(
        default=DEFAULT_POLICY.review_low,
        ge=0.0,
        le=1.0,
        description="Calibrated P(read correctly) below which a letter greedy decoding misread "
        "is reported misread; between review_low and review_high it is 'uncertain'.",
    )
    review_high: float = Field(
        default=DEFAULT_POLICY.review_high,
        ge=0.0,
        le=1.0,
        description="Calibrated P(read correctly) at or above which a letter is 'correct'.",
    )
    insertion_min: float = Field(
        default=DEFAULT_POLICY.insertion_min,
        ge=0.0,
        le=1.0,
        description="Calibrated P(the extra letter was really said) needed to report it.",
    )
    io_workers: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Phrases aligned at once: their store reads overlap, so request latency is "
        "paid in parallel, not in series.",
    )

    def policy(
        self, calibration: tuple[Calibration, Calibration] | None = None
    ) -> DecisionPolicy | None:
        """The decision policy; `calibration` is the model's own (its `calibration.json`),
        else the demo model's coefficients."""
        if self.judgement is Judgement.GREEDY:
            return None
        if self.judgement is Judgement.RAW:
            return RAW_POLICY
        letter, insertion = calibration or (DEFAULT_POLICY.letter, DEFAULT_POLICY.insertion)
        return DecisionPolicy(
            letter=letter,
            insertion=insertion,
            review_low=self.review_low,
            review_high=self.review_high,
            insertion_min=self.insertion_min,
        )


#: A phrase's letter rows and phrase row, or its error row.
AlignOutcome = tuple[list[dict[str, object]], dict[str, object]] | dict[str, object]


def error_row(
    row: Mapping[str, object], stage: str, reason: str, message: str
) -> dict[str, object]:
    return {
        "activity_id": row["activity_id"],
        "phrase_index": row["phrase_index"],
        "tenant_id": row.get("tenant_id"),
        "activity_date": row.get("activity_date"),
        "stage": stage,
        "reason_code": reason,
        "message": message,
    }


#: Below this many phrases the numpy aligner (~2.5 ms a phrase) finishes before the compiled
#: kernel's compiler has even been imported (~1 s): small days, a 1-phrase day above all, skip it.
COMPILED_ALIGNER_MIN_PHRASES = 400


def aligner_for(phrases: int) -> Callable[..., list[TokenSpan]]:
    """The forced aligner worth its start-up cost for a partition of `phrases` (same paths)."""
    return forced_align if phrases >= COMPILED_ALIGNER_MIN_PHRASES else forced_align_reference


def align_phrase(
    store: ObjectStore,
    row: Mapping[str, object],
    vocabulary: CtcVocabulary,
    config: AlignmentsConfig,
    policy: DecisionPolicy | None,
    aligner: Callable[..., list[TokenSpan]] = forced_align,
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Letter rows and the phrase row for one transcribed phrase (`policy`: the stage's
    decision policy, `config.policy(...)` computed once per stage)."""
    started = time.perf_counter()
    # The model that produced the emissions, which may differ from the configured one after a
    # fallback: results name the bytes that actually scored them.
    model = ModelInfo(
        name=str(row["model_name"]),
        version=str(row["model_version"]),
        sha256=str(row["model_sha256"]),
    )
    try:
        emissions = decode_emissions(store.read_bytes(str(row["emissions_key"])))
    except ObjectNotFoundError as exc:
        raise PhraseError(ReasonCode.EMISSIONS_MISSING, "stored emissions are missing") from exc

    def load_samples() -> np.ndarray:
        # Only energy-widened spans need the audio: other span modes never fetch or decode it.
        return decode_clip(store.read_bytes(str(row["clip_key"])))

    letters = list(row["letters"] or [])  # type: ignore[call-overload]
    transcript = Transcript(
        activity_id=str(row["activity_id"]),
        phrase_index=int(row["phrase_index"]),  # type: ignore[call-overload]
        letters=letters,
        confidences=list(row["confidences"] or []),  # type: ignore[call-overload]
        frame_spans=list(zip(row["frame_starts"] or [], row["frame_ends"] or [], strict=True)),  # type: ignore[call-overload]
        emissions_key=str(row["emissions_key"]),
        num_frames=int(row["num_frames"]),  # type: ignore[call-overload]
        frame_duration_s=float(row["frame_duration_s"]),  # type: ignore[arg-type]
        engine=str(row["engine"]),
        inference_ms=float(row["inference_ms"]),  # type: ignore[arg-type]
    )
    expected = str(row["expected_text"]).split(" ")
    scoring = score_phrase(
        expected,
        transcript,
        emissions.log_probs,
        vocabulary,
        model,
        accept_support=config.accept_support,
        span_mode=config.span_mode,
        policy=policy,
        load_samples=load_samples,
        aligner=aligner,
    )
    alignment_ms = (time.perf_counter() - started) * 1000
    phrase = PhraseResult(
        activity_id=transcript.activity_id,
        phrase_index=transcript.phrase_index,
        tenant_id=str(row["tenant_id"]),
        activity_date=row["activity_date"],  # type: ignore[arg-type]
        expected_text=str(row["expected_text"]),
        transcript=transcript.text,
        n_expected=len(expected),
        n_correct=scoring.n_correct,
        n_inserted=scoring.n_inserted,
        accuracy=scoring.accuracy,
        duration_s=float(row["duration_s"]),  # type: ignore[arg-type]
        inference_ms=transcript.inference_ms,
        alignment_ms=round(alignment_ms, 3),
        alignment_method=scoring.method,
        engine=transcript.engine,
        model_name=model.name,
        model_version=model.version,
        model_sha256=model.sha256,
    )
    return [letter.model_dump(mode="json") for letter in scoring.letters], phrase.model_dump(
        mode="python"
    )


def build_alignments(
    store: ObjectStore,
    vocabulary: CtcVocabulary,
    partition_key: str,
    config: AlignmentsConfig,
    calibration: tuple[Calibration, Calibration] | None = None,
) -> StageSummary:
    summary = StageSummary(Stage.ALIGNMENTS, partition_key)
    policy = config.policy(calibration)
    started = time.perf_counter()
    source = store.open_table(stage_table_key(Stage.TRANSCRIPTS, partition_key), TRANSCRIPTS_SCHEMA)
    statuses: Counter[str] = Counter()
    expected_letters = 0
    first_model: str | None = None
    rows = (row for batch in source.batches(1024) for row in batch.to_pylist())
    aligner = aligner_for(source.num_rows)

    def align(row: dict[str, object]) -> AlignOutcome:
        """Letter and phrase rows, or the phrase's error row; runs on a pool worker."""
        if row.get("error_reason") is not None:
            return error_row(
                row, str(row["error_stage"]), str(row["error_reason"]), row["error_message"] or ""
            )
        try:
            letters, phrase = align_phrase(store, row, vocabulary, config, policy, aligner)
        except PhraseError as exc:
            log.debug(
                "phrase_alignment_failed",
                activity_id=row["activity_id"],
                phrase_index=row["phrase_index"],
                status="errored",
                reason=exc.reason.value,
            )
            return error_row(row, Stage.ALIGNMENTS.value, exc.reason.value, exc.message)
        log.debug(
            "phrase_aligned",
            activity_id=phrase["activity_id"],
            phrase_index=phrase["phrase_index"],
            status="ok",
            method=str(phrase["alignment_method"]),
            accuracy=phrase["accuracy"],
            latency_ms=phrase["alignment_ms"],
        )
        return letters, phrase

    def table_key(name: str) -> str:
        return stage_table_key(Stage.ALIGNMENTS, partition_key, name)

    # Workers read emissions (and audio when a span mode needs it) concurrently; results come
    # back in input order and at most a few windows of phrases are alive at once. The three
    # tables stream out as row groups: the stage holds compressed Parquet, not the day's rows.
    workers = config.io_workers
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alignments") as pool,
        store.table_writer(table_key("letter_scores"), LETTER_SCORES_SCHEMA) as letter_rows,
        store.table_writer(table_key("phrase_results"), PHRASE_RESULTS_SCHEMA) as phrase_rows,
        store.table_writer(table_key("errors"), ERRORS_SCHEMA) as errors,
    ):
        for outcome in bounded_map(pool, in_current_context(align), rows, window=4 * workers):
            if isinstance(outcome, dict):
                errors.append(outcome)
                summary.count_errors([str(outcome["reason_code"])])
                continue
            letters, phrase = outcome
            letter_rows.extend(letters)
            phrase_rows.append(phrase)
            statuses.update(str(letter["status"]) for letter in letters)
            expected_letters += int(phrase["n_expected"])  # type: ignore[call-overload]
            if first_model is None:
                first_model = f"{phrase['model_name']}@{phrase['model_version']}"
            if len(summary.preview) < 10:
                summary.preview.append(
                    {
                        "activity_id": phrase["activity_id"],
                        "phrase_index": phrase["phrase_index"],
                        "expected": phrase["expected_text"],
                        "transcript": phrase["transcript"],
                        "accuracy": phrase["accuracy"],
                    }
                )
    summary.phrases_in = source.num_rows
    summary.phrases_ok = phrase_rows.num_rows
    summary.phrases_errored = errors.num_rows
    summary.extra["letters"] = expected_letters
    summary.extra["letters_by_status"] = dict(sorted(statuses.items()))
    summary.extra["share_correct"] = round(
        statuses["correct"] / expected_letters if expected_letters else 0.0, 4
    )
    summary.timings_ms["alignment"] = (time.perf_counter() - started) * 1000
    if first_model is not None:
        summary.extra["model"] = first_model
    summary.check_reconciles()
    return summary


@letter_scoring_asset(
    deps=["transcripts"],
    kinds={"numpy"},
    description="Per-letter status, confidence and time span; `unaligned` with a reason when "
    "forced alignment cannot run.",
)
def alignments(
    context: dg.AssetExecutionContext,
    config: AlignmentsConfig,
    store: ObjectStore,
    inference: InferenceResource,
) -> dg.MaterializeResult:
    with stage_scope(context, Stage.ALIGNMENTS):
        vocabulary = inference.vocabulary()
        calibration = inference.calibration()

        def build(key: str, record: PartitionRecord) -> StageSummary:
            summary = build_alignments(store, vocabulary, key, config, calibration)
            model = summary.extra.get("model")
            record.model = str(model) if model else None
            return summary

        summaries = each_partition(context, Stage.ALIGNMENTS, build)
    return dg.MaterializeResult(metadata=summary_metadata(summaries))
