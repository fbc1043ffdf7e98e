"""Per-letter judgements and per-phrase roll-ups: the scoring contract of DESIGN.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asr_assets.core.alignment import (
    EditOp,
    edit_alignment,
    forced_align,
    frame_energy_db,
    widen_spans,
)
from asr_assets.core.audio import TARGET_SAMPLE_RATE
from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.errors import PhraseError, ReasonCode
from asr_assets.core.models import AlignmentMethod, LetterScore, LetterStatus, ModelInfo, Transcript


@dataclass(frozen=True)
class PhraseScoring:
    letters: list[LetterScore]
    method: AlignmentMethod
    n_correct: int
    n_inserted: int
    accuracy: float


def score_phrase(
    expected: Sequence[str],
    transcript: Transcript,
    log_probs: np.ndarray | None,
    vocabulary: CtcVocabulary,
    model: ModelInfo,
    samples: np.ndarray | None = None,
) -> PhraseScoring:
    """Judge every expected letter of a phrase, and report extra letters as insertions.

    `log_probs` may be None (an engine that returns only text): statuses then come from the
    edit alignment alone and every expected letter is `unaligned` for lack of timing.
    """
    steps = edit_alignment(expected, transcript.letters)
    frame_s = transcript.frame_duration_s
    spans: list[tuple[int, int]] | None = None
    goodness: list[float] | None = None
    unaligned_reason: ReasonCode | None = None
    if log_probs is None:
        unaligned_reason = ReasonCode.EMISSIONS_MISSING
    else:
        fold = [] if vocabulary.separator_id is None else [vocabulary.separator_id]
        try:
            token_spans = forced_align(
                log_probs, vocabulary.letter_ids(expected), vocabulary.blank_id, fold
            )
        except PhraseError as exc:
            unaligned_reason = exc.reason
        else:
            stride = round(frame_s * TARGET_SAMPLE_RATE) if frame_s > 0 else None
            energy = (
                None if samples is None else frame_energy_db(samples, log_probs.shape[0], stride)
            )
            spans = widen_spans(token_spans, log_probs.shape[0], energy)
            goodness = [span.score for span in token_spans]

    common = {
        "activity_id": transcript.activity_id,
        "phrase_index": transcript.phrase_index,
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
    }
    rows: list[LetterScore] = []
    next_expected = 0
    for step in steps:
        recognized = (
            None if step.recognized_index is None else transcript.letters[step.recognized_index]
        )
        rec_conf = (
            None if step.recognized_index is None else transcript.confidences[step.recognized_index]
        )
        if step.op is EditOp.INSERT:
            assert step.recognized_index is not None
            start, end = transcript.frame_spans[step.recognized_index]
            rows.append(
                LetterScore(
                    **common,
                    letter_index=next_expected,
                    expected=None,
                    recognized=recognized,
                    status=LetterStatus.INSERTED,
                    confidence=_unit(rec_conf),
                    start_s=None if start < 0 else start * frame_s,
                    end_s=None if end < 0 else end * frame_s,
                    alignment_score=None,
                )
            )
            continue
        assert step.expected_index is not None
        index = step.expected_index
        next_expected = index + 1
        status = {
            EditOp.MATCH: LetterStatus.CORRECT,
            EditOp.SUBSTITUTE: LetterStatus.SUBSTITUTED,
            EditOp.DELETE: LetterStatus.DELETED,
        }[step.op]
        score = None if goodness is None else goodness[index]
        if status is LetterStatus.DELETED:
            # Confidence that the letter is absent: the expected letter's own support is low.
            confidence = 1.0 - (score if score is not None else 0.0)
        else:
            confidence = _unit(rec_conf)
        if unaligned_reason is not None:
            status = LetterStatus.UNALIGNED
        span = None if spans is None else spans[index]
        rows.append(
            LetterScore(
                **common,
                letter_index=index,
                expected=expected[index],
                recognized=recognized,
                status=status,
                confidence=_unit(confidence),
                start_s=None if span is None else round(span[0] * frame_s, 4),
                end_s=None if span is None else round(span[1] * frame_s, 4),
                alignment_score=None if score is None else _unit(score),
                unaligned_reason=unaligned_reason,
            )
        )
    n_correct = sum(row.status is LetterStatus.CORRECT for row in rows)
    n_inserted = sum(row.status is LetterStatus.INSERTED for row in rows)
    return PhraseScoring(
        letters=rows,
        method=AlignmentMethod.EDIT_DISTANCE_ONLY if spans is None else AlignmentMethod.CTC_FORCED,
        n_correct=n_correct,
        n_inserted=n_inserted,
        accuracy=n_correct / len(expected) if expected else 0.0,
    )


def _unit(value: float | None) -> float:
    if value is None or not np.isfinite(value):
        return 0.0
    return float(min(1.0, max(0.0, value)))
