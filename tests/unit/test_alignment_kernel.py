"""The compiled forced-alignment kernel against the numpy reference: identical paths."""

import numpy as np
import pytest

from asr_assets.core.alignment import forced_align, forced_align_reference, min_frames_for
from asr_assets.core.errors import PhraseError

BLANK, SEP, VOCAB_SIZE = 0, 1, 30


def random_trellis(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Emissions of 40-500 frames and 1-60 targets, repeats included, in the forms seen in use."""
    num_targets = int(rng.integers(1, 61))
    alphabet = int(rng.choice([2, 4, 26]))  # small alphabets force repeated neighbours
    targets = [int(t) for t in rng.integers(2, 2 + alphabet, size=num_targets)]
    low = max(40, min_frames_for(targets))
    frames = int(rng.integers(low, max(low, 500) + 1))
    logits = rng.standard_normal((frames, VOCAB_SIZE)).astype(np.float32) * float(
        rng.choice([0.5, 3.0, 10.0])
    )
    if rng.random() < 0.5:  # peaky, model-like: a blank floor with letters firing here and there
        logits[:, BLANK] += 4.0
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    if rng.random() < 0.5:  # as stored: float16, which makes exact ties between paths common
        log_probs = log_probs.astype(np.float16).astype(np.float32)
    return log_probs.astype(np.float32), targets


def test_kernel_paths_equal_the_numpy_reference_on_300_random_trellises() -> None:
    rng = np.random.default_rng(2026)
    compared = 0
    for _ in range(300):
        log_probs, targets = random_trellis(rng)
        fold = [SEP] if rng.random() < 0.5 else []
        try:
            expected = forced_align_reference(log_probs, targets, BLANK, fold)
        except PhraseError as error:
            with pytest.raises(PhraseError) as raised:
                forced_align(log_probs, targets, BLANK, fold)
            assert raised.value.reason is error.reason
            continue
        got = forced_align(log_probs, targets, BLANK, fold)
        assert [(s.token_id, s.start, s.end) for s in got] == [
            (s.token_id, s.start, s.end) for s in expected
        ]
        assert [s.score for s in got] == pytest.approx([s.score for s in expected], rel=1e-9)
        compared += 1
    assert compared == 300


def test_kernel_resolves_exact_ties_like_the_reference() -> None:
    """All-equal emissions make every path tie: the choice must still be the reference's."""
    log_probs = np.full((50, VOCAB_SIZE), np.log(1 / VOCAB_SIZE), dtype=np.float32)
    for targets in ([2], [2, 2], [2, 3, 2, 2, 4], [5] * 20):
        got = forced_align(log_probs, targets, BLANK)
        expected = forced_align_reference(log_probs, targets, BLANK)
        assert [(s.start, s.end) for s in got] == [(s.start, s.end) for s in expected]


def test_kernel_accepts_float16_emissions_and_reports_impossible_paths() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((60, VOCAB_SIZE))
    log_probs = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float16)
    targets = [4, 5, 5, 6]
    assert [(s.start, s.end) for s in forced_align(log_probs, targets, BLANK)] == [
        (s.start, s.end) for s in forced_align_reference(log_probs, targets, BLANK)
    ]
    blocked = log_probs.astype(np.float32)
    blocked[:, 5] = -np.inf  # the target can never be emitted
    with pytest.raises(PhraseError) as raised:
        forced_align(blocked, targets, BLANK)
    assert raised.value.reason.value == "alignment_failed"
