import numpy as np
import pytest

from asr_assets.core.decoding import CtcVocabulary, DecodeError, greedy_decode, letters_from_text
from tests.support.models import VOCAB

VOCABULARY = CtcVocabulary.from_vocab(VOCAB)
BLANK, SEP = 0, 1


def emissions(tokens: list[str | int], confident: float = 0.9) -> np.ndarray:
    """One frame per entry; each frame puts `confident` mass on its token."""
    size = len(VOCAB)
    frames = np.full((len(tokens), size), (1 - confident) / (size - 1))
    for t, token in enumerate(tokens):
        index = token if isinstance(token, int) else VOCAB[token]
        frames[t, index] = confident
    return np.log(frames).astype(np.float32)


def test_collapses_repeats_and_drops_blanks() -> None:
    decoded = greedy_decode(
        emissions([BLANK, "b", "b", BLANK, SEP, "d", BLANK, SEP, "p"]), VOCABULARY
    )
    assert decoded.letters == ["b", "d", "p"]
    assert decoded.frame_spans == [(1, 3), (5, 6), (8, 9)]
    assert decoded.anomalies == []


def test_repeated_letter_needs_a_blank_between() -> None:
    assert greedy_decode(emissions(["b", "b"]), VOCABULARY).letters == ["b"]
    assert greedy_decode(emissions(["b", BLANK, "b"]), VOCABULARY).letters == ["b", "b"]


def test_confidence_is_mean_posterior_of_the_run() -> None:
    log_probs = emissions(["m", "m"])
    log_probs[1] = emissions(["m"], confident=0.5)[0]
    decoded = greedy_decode(log_probs, VOCABULARY)
    assert decoded.confidences == pytest.approx([0.7], abs=1e-5)


def test_robust_mode_records_consecutive_separators() -> None:
    decoded = greedy_decode(emissions(["a", SEP, BLANK, SEP, "b"]), VOCABULARY)
    assert decoded.letters == ["a", "b"]
    assert "empty_segment" in decoded.anomalies


def test_strict_mode_rejects_multi_letter_segments() -> None:
    with pytest.raises(DecodeError):
        greedy_decode(emissions(["a", "b"]), VOCABULARY, robust=False)
    assert greedy_decode(emissions(["a", "b"]), VOCABULARY).anomalies == ["multi_letter_segment"]


def test_empty_emissions_decode_to_nothing() -> None:
    decoded = greedy_decode(np.zeros((0, len(VOCAB)), dtype=np.float32), VOCABULARY)
    assert decoded.letters == [] and decoded.confidences == []


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(DecodeError):
        greedy_decode(np.zeros((5, 3), dtype=np.float32), VOCABULARY)


@pytest.mark.parametrize(
    ("text", "confidences", "letters", "values", "anomaly"),
    [
        ("b|d|p", [0.9, 0.8, 0.7], ["b", "d", "p"], [0.9, 0.8, 0.7], None),
        ("b||d|", [0.9, 0.8], ["b", "d"], [0.9, 0.8], "empty_segment"),
        ("b|d|p", [0.9], ["b", "d", "p"], [0.9, 0.9, 0.9], "confidence_length_mismatch"),
        ("b|d", [0.9, 0.8, 0.7, 0.6], ["b", "d"], [0.9, 0.8], "confidence_length_mismatch"),
        ("|b d|", [], ["b", "d"], [0.0, 0.0], "confidence_length_mismatch"),
        ("b|d", [float("nan"), 0.5], ["b", "d"], [0.5, 0.5], "non_finite_confidence"),
    ],
)
def test_letters_from_text_robust(
    text: str,
    confidences: list[float],
    letters: list[str],
    values: list[float],
    anomaly: str | None,
) -> None:
    decoded = letters_from_text(text, confidences)
    assert decoded.letters == letters
    assert decoded.confidences == pytest.approx(values)
    if anomaly:
        assert anomaly in decoded.anomalies
        with pytest.raises(DecodeError):
            letters_from_text(text, confidences, robust=False)


def test_vocabulary_must_hold_every_letter() -> None:
    with pytest.raises(ValueError, match="lacks letters"):
        CtcVocabulary.from_vocab({"<pad>": 0, "a": 1})
