import numpy as np
import pytest

from asr_assets.core.decoding import CtcVocabulary, greedy_decode
from asr_assets.core.errors import ReasonCode
from asr_assets.core.models import AlignmentMethod, LetterStatus, ModelInfo, Transcript
from asr_assets.core.scoring import score_phrase
from tests.unit.test_decoding import BLANK, SEP, VOCAB, emissions

VOCABULARY = CtcVocabulary.from_vocab(VOCAB)
MODEL = ModelInfo(name="m", version="1", sha256="f" * 64)


def transcript_for(log_probs: np.ndarray) -> Transcript:
    decoded = greedy_decode(log_probs, VOCABULARY)
    return Transcript(
        activity_id="a",
        phrase_index=0,
        letters=decoded.letters,
        confidences=decoded.confidences,
        frame_spans=decoded.frame_spans,
        emissions_key="k",
        num_frames=log_probs.shape[0],
        frame_duration_s=0.02,
        engine="test",
        inference_ms=1.0,
    )


def statuses(result) -> list[tuple[str | None, str]]:
    return [(row.expected, row.status.value) for row in result.letters]


def test_correct_reading() -> None:
    log_probs = emissions([BLANK, "b", BLANK, SEP, "d", BLANK, SEP, "p", BLANK])
    result = score_phrase(["b", "d", "p"], transcript_for(log_probs), log_probs, VOCABULARY, MODEL)
    assert statuses(result) == [("b", "correct"), ("d", "correct"), ("p", "correct")]
    assert result.accuracy == 1.0 and result.method is AlignmentMethod.CTC_FORCED
    spans = [(row.start_s, row.end_s) for row in result.letters]
    assert all(start < end for start, end in spans)
    assert [row.model_sha256 for row in result.letters] == [MODEL.sha256] * 3


def test_substitution_deletion_and_insertion() -> None:
    # expected b d p; read b q p x: d substituted by q, x inserted after p
    log_probs = emissions(
        [BLANK, "b", BLANK, SEP, "q", BLANK, SEP, "p", "p", BLANK, SEP, "x", BLANK]
    )
    result = score_phrase(["b", "d", "p"], transcript_for(log_probs), log_probs, VOCABULARY, MODEL)
    assert statuses(result) == [
        ("b", "correct"),
        ("d", "substituted"),
        ("p", "correct"),
        (None, "inserted"),
    ]
    inserted = result.letters[3]
    assert inserted.recognized == "x" and inserted.letter_index == 3
    assert inserted.start_s == pytest.approx(11 * 0.02)
    assert result.n_inserted == 1 and result.accuracy == pytest.approx(2 / 3)


def test_deleted_letter_has_high_confidence_in_deletion() -> None:
    log_probs = emissions([BLANK, "b", BLANK, BLANK, BLANK, BLANK, SEP, "p", BLANK])
    result = score_phrase(["b", "d", "p"], transcript_for(log_probs), log_probs, VOCABULARY, MODEL)
    deleted = result.letters[1]
    assert deleted.status is LetterStatus.DELETED and deleted.recognized is None
    assert deleted.confidence > 0.9 and deleted.alignment_score is not None
    assert deleted.start_s is not None  # forced alignment still places it in time


def test_too_short_for_sequence_marks_every_letter_unaligned() -> None:
    log_probs = emissions(["b", "d"])
    result = score_phrase(
        ["b", "d", "p", "q"], transcript_for(log_probs), log_probs, VOCABULARY, MODEL
    )
    assert [row.status for row in result.letters] == [LetterStatus.UNALIGNED] * 4
    assert {row.unaligned_reason for row in result.letters} == {
        ReasonCode.AUDIO_TOO_SHORT_FOR_SEQUENCE
    }
    assert result.method is AlignmentMethod.EDIT_DISTANCE_ONLY
    assert len(result.letters) == 4  # never a silent drop


def test_missing_emissions_keep_every_letter() -> None:
    log_probs = emissions([BLANK, "b", BLANK])
    result = score_phrase(["b", "d"], transcript_for(log_probs), None, VOCABULARY, MODEL)
    assert [row.unaligned_reason for row in result.letters] == [ReasonCode.EMISSIONS_MISSING] * 2


def _with_weak_letter(letter: str, weight: float) -> np.ndarray:
    """b, then a frame where blank wins but `letter` holds `weight`, then p."""
    log_probs = emissions([BLANK, "b", BLANK, SEP, BLANK, BLANK, SEP, "p", BLANK])
    frame = np.full(len(VOCAB), (1 - 0.7 - weight) / (len(VOCAB) - 2))
    frame[BLANK] = 0.7
    frame[VOCAB[letter]] = weight
    log_probs[4] = np.log(frame)
    return log_probs


def test_a_letter_greedy_decoding_missed_is_judged_correct_on_its_support() -> None:
    log_probs = _with_weak_letter("d", 0.25)
    transcript = transcript_for(log_probs)
    assert transcript.letters == ["b", "p"]  # greedy decoding lost the d
    result = score_phrase(
        ["b", "d", "p"], transcript, log_probs, VOCABULARY, MODEL, accept_support=0.05
    )
    d = result.letters[1]
    assert (d.status, d.recognized) == (LetterStatus.CORRECT, "d")
    assert d.confidence == pytest.approx(0.25, abs=1e-4)  # honest: heard, but weakly
    kept = score_phrase(["b", "d", "p"], transcript, log_probs, VOCABULARY, MODEL)
    assert kept.letters[1].status is LetterStatus.DELETED  # the default keeps greedy's judgement


def test_a_skipped_letter_without_support_stays_deleted() -> None:
    log_probs = _with_weak_letter("d", 0.01)
    result = score_phrase(
        ["b", "d", "p"],
        transcript_for(log_probs),
        log_probs,
        VOCABULARY,
        MODEL,
        accept_support=0.05,
    )
    assert result.letters[1].status is LetterStatus.DELETED
    assert result.letters[1].confidence > 0.95


def test_audio_is_loaded_only_when_the_span_mode_resolves_to_energy() -> None:
    """The forced timing says whether the clip is needed; the stage fetches it only then."""
    from asr_assets.core.alignment import SpanMode
    from asr_assets.core.scoring import time_letters

    covering = emissions([BLANK, *["b"] * 6, BLANK, *["d"] * 6, BLANK, *["p"] * 6, BLANK])
    spiky = emissions([BLANK] * 4 + ["b"] + [BLANK] * 6 + ["d"] + [BLANK] * 6 + ["p"] + [BLANK] * 4)
    for log_probs, mode, expected_loads in (
        (covering, SpanMode.AUTO, 0),
        (covering, SpanMode.ALIGNED, 0),
        (spiky, SpanMode.AUTO, 1),
        (covering, SpanMode.ENERGY, 1),
    ):
        timing = time_letters(["b", "d", "p"], log_probs, VOCABULARY, mode)
        loads = int(timing.needs_audio)
        assert loads == expected_loads, mode
