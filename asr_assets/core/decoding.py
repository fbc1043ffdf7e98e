"""Greedy CTC decoding into letters with per-letter confidences and frame spans.

Letter reading is unusual speech: each letter name is its own "word", so the model's word
separator `|` is a boundary between letters, not part of the answer. Real models emit doubled
separators, empty segments and, from some servers, confidence arrays that do not match the
tokens; `robust=True` (the pipeline default) turns those into recorded anomalies instead of errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_assets.core.models import LETTERS

SEPARATOR = "|"


class DecodeError(ValueError):
    """Raised in strict mode when the model output breaks the letter-reading assumptions."""


@dataclass(frozen=True)
class CtcVocabulary:
    """Token ids the decoder and aligner need, derived from a model's `vocab.json`."""

    id_to_token: Mapping[int, str]
    blank_id: int
    separator_id: int | None

    @classmethod
    def from_vocab(
        cls,
        vocab: Mapping[str, int],
        blank_token: str = "<pad>",  # noqa: S107 - a token name, not a secret
    ) -> CtcVocabulary:
        if blank_token not in vocab:
            raise ValueError(f"vocabulary has no blank token {blank_token!r}")
        missing = [letter for letter in LETTERS if letter not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks letters {''.join(missing)}")
        return cls(
            id_to_token={index: token for token, index in vocab.items()},
            blank_id=vocab[blank_token],
            separator_id=vocab.get(SEPARATOR),
        )

    def letter_ids(self, letters: Sequence[str]) -> list[int]:
        token_to_id = {token: index for index, token in self.id_to_token.items()}
        return [token_to_id[letter] for letter in letters]

    @property
    def size(self) -> int:
        return max(self.id_to_token) + 1


@dataclass(frozen=True)
class DecodedLetters:
    letters: list[str]
    confidences: list[float]
    frame_spans: list[tuple[int, int]]  # [start, end) in emission frames
    anomalies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.letters)


def _runs(best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of runs of equal ids."""
    if best.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(np.diff(best)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [best.size]))
    return starts, ends - starts


def greedy_decode(
    log_probs: np.ndarray, vocabulary: CtcVocabulary, *, robust: bool = True
) -> DecodedLetters:
    """Best path decoding: collapse repeats, drop blanks, split letters at separators.

    A letter's confidence is its mean posterior over the frames of its run: a letter the model
    held only weakly for a single frame is less trustworthy than one held firmly.
    """
    if log_probs.ndim != 2 or log_probs.shape[1] < vocabulary.size:
        raise DecodeError(f"emissions of shape {log_probs.shape} do not match the vocabulary")
    best = np.argmax(log_probs, axis=1)
    posteriors = np.exp(
        np.take_along_axis(log_probs, best[:, None], axis=1)[:, 0].astype(np.float64)
    )
    starts, lengths = _runs(best)
    letters: list[str] = []
    confidences: list[float] = []
    spans: list[tuple[int, int]] = []
    anomalies: list[str] = []
    since_separator = 0
    previous_was_separator = False
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        token_id = int(best[start])
        if token_id == vocabulary.blank_id:
            continue
        token = vocabulary.id_to_token.get(token_id, "")
        if token_id == vocabulary.separator_id:
            if previous_was_separator or not letters:
                anomalies.append("empty_segment")
            previous_was_separator = True
            since_separator = 0
            continue
        if token not in LETTERS or len(token) != 1:
            anomalies.append("non_letter_token")
            continue
        since_separator += 1
        if since_separator > 1:
            anomalies.append("multi_letter_segment")
        previous_was_separator = False
        letters.append(token)
        confidences.append(float(posteriors[start : start + length].mean()))
        spans.append((start, start + length))
    if not robust and anomalies:
        raise DecodeError(f"unexpected decoder output: {sorted(set(anomalies))}")
    return DecodedLetters(letters, confidences, spans, sorted(set(anomalies)))


def letters_from_text(
    text: str, confidences: Sequence[float] | None = None, *, robust: bool = True
) -> DecodedLetters:
    """Letters from an already-decoded string such as ``"b||d| p|"`` plus per-token confidences.

    Engines that return text instead of emissions (some server ensembles do) give confidences per
    non-blank token; their count may not match once separators are stripped. Robust mode pads the
    missing with the mean of the known (or 0) and drops the surplus, recording the anomaly.
    """
    anomalies: list[str] = []
    segments = text.replace(" ", SEPARATOR).split(SEPARATOR)
    if any(segment == "" for segment in segments[1:-1]) or text.startswith(SEPARATOR):
        anomalies.append("empty_segment")
    letters: list[str] = []
    for segment in segments:
        if len(segment) > 1:
            anomalies.append("multi_letter_segment")
        for char in segment:
            if char in LETTERS:
                letters.append(char)
            else:
                anomalies.append("non_letter_token")
    given = [float(c) for c in (confidences or [])]
    if confidences is not None and len(given) != len(letters):
        anomalies.append("confidence_length_mismatch")
    finite = [c for c in given if np.isfinite(c)]
    fill = float(np.mean(finite)) if finite else 0.0
    if len(finite) != len(given):
        anomalies.append("non_finite_confidence")
    given = [c if np.isfinite(c) else fill for c in given]
    values = given[: len(letters)] + [fill] * max(0, len(letters) - len(given))
    values = [min(1.0, max(0.0, v)) for v in values]
    if not robust and anomalies:
        raise DecodeError(f"unexpected decoder output: {sorted(set(anomalies))}")
    return DecodedLetters(letters, values, [(-1, -1)] * len(letters), sorted(set(anomalies)))
