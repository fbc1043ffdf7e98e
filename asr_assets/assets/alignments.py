"""`alignments`: judge each expected letter (edit alignment) and time it (CTC forced alignment)."""

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

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
    ForcedTiming,
    Judgement,
    score_phrase,
    time_letters,
)
from asr_assets.core.storage import stage_table_key
from asr_assets.core.tables import (
    ERRORS_SCHEMA,
    LETTER_SCORES_SCHEMA,
    PHRASE_RESULTS_SCHEMA,
    TRANSCRIPTS_SCHEMA,
)
from asr_assets.inference.base import Emissions
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


#: Below this many phrases the numpy aligner (~1.5-2.5 ms a phrase) finishes before the compiled
#: kernel's compiler has even been imported (~1 s): small days, a 1-phrase day above all, skip it.
COMPILED_ALIGNER_MIN_PHRASES = 400


def aligner_for(phrases: int) -> Callable[..., list[TokenSpan]]:
    """The forced aligner worth its start-up cost for a partition of `phrases` (same paths)."""
    return forced_align if phrases >= COMPILED_ALIGNER_MIN_PHRASES else forced_align_reference


def read_emissions(store: ObjectStore, row: Mapping[str, object]) -> Emissions:
    """The phrase's stored emissions; a missing object is the phrase's error, not the stage's."""
    try:
        return decode_emissions(store.read_bytes(str(row["emissions_key"])))
    except ObjectNotFoundError as exc:
        raise PhraseError(ReasonCode.EMISSIONS_MISSING, "stored emissions are missing") from exc


def read_samples(store: ObjectStore, row: Mapping[str, object]) -> np.ndarray:
    """The phrase's decoded clip, for energy-widened spans only."""
    try:
        return decode_clip(store.read_bytes(str(row["clip_key"])))
    except ObjectNotFoundError as exc:
        raise PhraseError(
            ReasonCode.AUDIO_MISSING, "the clip is missing: energy-widened spans need it"
        ) from exc


def _transcript(row: Mapping[str, object]) -> Transcript:
    return Transcript(
        activity_id=str(row["activity_id"]),
        phrase_index=int(row["phrase_index"]),  # type: ignore[call-overload]
        letters=list(row["letters"] or []),  # type: ignore[call-overload]
        confidences=list(row["confidences"] or []),  # type: ignore[call-overload]
        frame_spans=list(zip(row["frame_starts"] or [], row["frame_ends"] or [], strict=True)),  # type: ignore[call-overload]
        emissions_key=str(row["emissions_key"]),
        num_frames=int(row["num_frames"]),  # type: ignore[call-overload]
        frame_duration_s=float(row["frame_duration_s"]),  # type: ignore[arg-type]
        engine=str(row["engine"]),
        inference_ms=float(row["inference_ms"]),  # type: ignore[arg-type]
    )


def score_aligned(
    row: Mapping[str, object],
    emissions: Emissions,
    timing: ForcedTiming,
    samples: np.ndarray | None,
    vocabulary: CtcVocabulary,
    config: AlignmentsConfig,
    policy: DecisionPolicy | None,
    started: float,
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Letter rows and the phrase row, from emissions, their forced timing and (for energy
    spans) the clip; `started` is when work on the phrase began, for `alignment_ms`."""
    # The model that produced the emissions, which may differ from the configured one after a
    # fallback: results name the bytes that actually scored them.
    model = ModelInfo(
        name=str(row["model_name"]),
        version=str(row["model_version"]),
        sha256=str(row["model_sha256"]),
    )
    transcript = _transcript(row)
    expected = str(row["expected_text"]).split(" ")
    scoring = score_phrase(
        expected,
        transcript,
        emissions.log_probs,
        vocabulary,
        model,
        samples=samples,
        accept_support=config.accept_support,
        span_mode=config.span_mode,
        policy=policy,
        timing=timing,
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


@dataclass
class _InFlight:
    """A phrase between its forced alignment and its rows: waiting for its clip, or done."""

    row: dict[str, object]
    outcome: AlignOutcome | None = None
    emissions: Emissions | None = None
    timing: ForcedTiming | None = None
    clip: Future[np.ndarray] | None = None
    started: float = 0.0


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

    def fetch(row: dict[str, object]) -> tuple[dict[str, object], Emissions | PhraseError | None]:
        """Pool side: the stored emissions of a transcribed phrase (store I/O only)."""
        if row.get("error_reason") is not None:
            return row, None
        try:
            return row, read_emissions(store, row)
        except PhraseError as exc:
            return row, exc

    def failed(row: Mapping[str, object], exc: PhraseError) -> dict[str, object]:
        log.debug(
            "phrase_alignment_failed",
            activity_id=row["activity_id"],
            phrase_index=row["phrase_index"],
            status="errored",
            reason=exc.reason.value,
        )
        return error_row(row, Stage.ALIGNMENTS.value, exc.reason.value, exc.message)

    def finish(item: _InFlight) -> AlignOutcome:
        """Stage thread: the phrase's rows once everything it needs is here."""
        if item.outcome is not None:
            return item.outcome
        assert item.emissions is not None and item.timing is not None
        samples = None
        if item.clip is not None:
            try:
                samples = item.clip.result()
            except PhraseError as exc:
                return failed(item.row, exc)
        letters, phrase = score_aligned(
            item.row, item.emissions, item.timing, samples, vocabulary, config, policy, item.started
        )
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

    def start(row: dict[str, object], fetched: Emissions | PhraseError | None) -> _InFlight:
        """Stage thread: forced alignment, then the clip's fetch if (only if) its spans need it."""
        if fetched is None:
            reason, message = str(row["error_reason"]), row["error_message"] or ""
            return _InFlight(row, error_row(row, str(row["error_stage"]), reason, message))
        if isinstance(fetched, PhraseError):
            return _InFlight(row, failed(row, fetched))
        began = time.perf_counter()
        expected = str(row["expected_text"]).split(" ")
        timing = time_letters(expected, fetched.log_probs, vocabulary, config.span_mode, aligner)
        clip = pool.submit(read_clip, row) if timing.needs_audio else None
        return _InFlight(row, None, fetched, timing, clip, began)

    def table_key(name: str) -> str:
        return stage_table_key(Stage.ALIGNMENTS, partition_key, name)

    read_clip = in_current_context(lambda row: read_samples(store, row))
    # The pool does store I/O only: emissions are read ahead in input order and clips fetched
    # for the phrases whose spans need them, so request latency is paid in parallel. Alignment
    # and judgement run on this thread: they are Python-bound, and spread over eight threads
    # they contended for the GIL and took twice as long as on one (1.5 vs 0.75 s, 204 phrases).
    # Phrases waiting for a clip queue in input order; at most `window` are in flight, and the
    # three tables stream out as row groups: the stage holds compressed Parquet, not the day.
    workers = config.io_workers
    window = 4 * workers
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alignments") as pool,
        store.table_writer(table_key("letter_scores"), LETTER_SCORES_SCHEMA) as letter_rows,
        store.table_writer(table_key("phrase_results"), PHRASE_RESULTS_SCHEMA) as phrase_rows,
        store.table_writer(table_key("errors"), ERRORS_SCHEMA) as errors,
    ):

        def emit(outcome: AlignOutcome) -> None:
            nonlocal expected_letters, first_model
            if isinstance(outcome, dict):
                errors.append(outcome)
                summary.count_errors([str(outcome["reason_code"])])
                return
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

        in_flight: deque[_InFlight] = deque()
        for row, fetched in bounded_map(pool, in_current_context(fetch), rows, window=window):
            in_flight.append(start(row, fetched))
            while in_flight and (
                len(in_flight) > window or in_flight[0].clip is None or in_flight[0].clip.done()
            ):
                emit(finish(in_flight.popleft()))
        while in_flight:
            emit(finish(in_flight.popleft()))
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
