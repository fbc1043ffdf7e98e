"""The calibrated judgement: calibrated confidences, the `uncertain` band, gated insertions."""

import numpy as np
import pytest

from asr_assets.assets.alignments import AlignmentsConfig
from asr_assets.core.models import LetterStatus
from asr_assets.core.scoring import (
    DEFAULT_POLICY,
    IDENTITY,
    RAW_POLICY,
    Calibration,
    DecisionPolicy,
    Judgement,
    score_phrase,
)
from tests.unit.test_decoding import BLANK, SEP, VOCAB, emissions
from tests.unit.test_scoring import MODEL, VOCABULARY, _with_weak_letter, transcript_for

BAND = DecisionPolicy(review_low=0.2, review_high=0.8, insertion_min=0.5)


def _judge(log_probs: np.ndarray, expected: list[str], policy: DecisionPolicy | None):
    return score_phrase(
        expected, transcript_for(log_probs), log_probs, VOCABULARY, MODEL, policy=policy
    )


def test_calibration_is_a_monotone_platt_map() -> None:
    assert IDENTITY.probability(0.3) == pytest.approx(0.3)
    shrink = Calibration(bias=0.0, weight=0.5)
    assert shrink.probability(0.99) < 0.99 and shrink.probability(0.01) > 0.01
    assert Calibration(flag_weight=2.0).probability(0.5, True) > 0.5
    assert 0.0 < IDENTITY.probability(0.0) < IDENTITY.probability(1.0) < 1.0


def test_calibration_is_the_platt_formula_at_every_score_and_never_overflows() -> None:
    def platt(c: Calibration, score: float, flag: bool) -> float:
        x = np.clip(score, 1e-4, 1 - 1e-4)
        z = c.bias + c.weight * np.log(x / (1 - x)) + c.flag_weight * flag
        return float(1 / (1 + np.exp(-z)))

    maps = [IDENTITY, Calibration(-1.3, 0.7, 0.4), Calibration(2.0, 3.0, -1.0)]
    for c in maps:
        for score in [-1.0, 0.0, 1e-9, 0.02, 0.5, 0.93, 1.0, 7.0, np.float32(0.25)]:
            for flag in (False, True):
                assert c.probability(score, flag) == pytest.approx(platt(c, score, flag), rel=1e-12)
    steep = Calibration(bias=0.0, weight=800.0)  # exp would overflow on a naive formula
    assert steep.probability(0.0) == 0.0 and steep.probability(1.0) == 1.0
    assert np.isnan(IDENTITY.probability(float("nan")))


def test_a_weakly_heard_letter_is_uncertain_not_misread() -> None:
    log_probs = _with_weak_letter("d", 0.28)
    assert transcript_for(log_probs).letters == ["b", "p"]  # greedy lost the d
    greedy = _judge(log_probs, ["b", "d", "p"], None)
    assert greedy.letters[1].status is LetterStatus.DELETED
    result = _judge(log_probs, ["b", "d", "p"], BAND)
    d = result.letters[1]
    assert d.status is LetterStatus.UNCERTAIN
    assert d.confidence == pytest.approx(0.28, abs=1e-3)  # P(read correctly), identity map
    assert d.start_s is not None  # still placed in time for the teacher to listen
    assert [r.status for r in result.letters] == [
        LetterStatus.CORRECT,
        LetterStatus.UNCERTAIN,
        LetterStatus.CORRECT,
    ]
    assert result.n_correct == 2


def test_clear_decisions_keep_greedy_statuses() -> None:
    log_probs = _with_weak_letter("d", 0.01)
    result = _judge(log_probs, ["b", "d", "p"], BAND)
    assert result.letters[1].status is LetterStatus.DELETED
    assert result.letters[1].confidence < 0.2
    assert result.letters[0].confidence > 0.8


def test_a_well_supported_letter_greedy_missed_is_correct() -> None:
    log_probs = _with_weak_letter("d", 0.25)
    lenient = DecisionPolicy(review_low=0.1, review_high=0.2)
    d = _judge(log_probs, ["b", "d", "p"], lenient).letters[1]
    assert (d.status, d.recognized) == (LetterStatus.CORRECT, "d")


def test_insertions_are_reported_only_above_the_calibrated_threshold() -> None:
    log_probs = emissions([BLANK, "b", BLANK, SEP, "d", BLANK, SEP, "x", BLANK], confident=0.9)
    reported = _judge(log_probs, ["b", "d"], BAND)
    assert [r.status for r in reported.letters][-1] is LetterStatus.INSERTED
    assert reported.n_inserted == 1
    strict = DecisionPolicy(insertion=Calibration(bias=-4.0), insertion_min=0.5)
    dropped = _judge(log_probs, ["b", "d"], strict)
    assert all(r.status is not LetterStatus.INSERTED for r in dropped.letters)
    assert dropped.n_inserted == 0


def test_raw_policy_reports_support_and_keeps_greedy() -> None:
    log_probs = _with_weak_letter("d", 0.25)
    d = _judge(log_probs, ["b", "d", "p"], RAW_POLICY).letters[1]
    assert d.status is LetterStatus.DELETED
    assert d.confidence == pytest.approx(0.25, abs=1e-3)


def test_policy_needs_both_band_edges_in_order() -> None:
    with pytest.raises(ValueError):
        DecisionPolicy(review_low=0.9, review_high=0.1)
    with pytest.raises(ValueError):
        DecisionPolicy(review_low=None, review_high=0.5)


def test_alignments_config_selects_the_judgement() -> None:
    assert AlignmentsConfig(judgement=Judgement.GREEDY).policy() is None
    assert AlignmentsConfig(judgement=Judgement.RAW).policy() is RAW_POLICY
    policy = AlignmentsConfig(review_low=0.1, review_high=0.9).policy()
    assert policy is not None and (policy.review_low, policy.review_high) == (0.1, 0.9)
    assert policy.letter == DEFAULT_POLICY.letter
    assert AlignmentsConfig().judgement is Judgement.CALIBRATED


def test_uncertain_is_an_allowed_status_of_the_quality_suites() -> None:
    from asr_assets.checks.suites import STATUSES

    assert "uncertain" in STATUSES
    assert VOCAB  # the shared test vocabulary is importable alongside
