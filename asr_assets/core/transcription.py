"""Greedy CTC transcription for any vocabulary: text, per-character and per-word times.

Letter scoring decodes a letters-only vocabulary (`decoding.py`); a general transcription model
has upper-case letters, digits, apostrophes and special tokens. This module makes no assumption
beyond CTC: a blank token, an optional word delimiter, and tokens that are text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimedToken:
    text: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Transcription:
    text: str
    chars: list[TimedToken]
    words: list[TimedToken]


def ctc_transcribe(
    log_probs: np.ndarray,
    id_to_token: Mapping[int, str],
    blank_id: int,
    frame_duration_s: float,
    *,
    delimiter_id: int | None = None,
    skip_ids: frozenset[int] = frozenset(),
) -> Transcription:
    """Best-path decoding; a character's confidence is its mean posterior over its run.

    A word spans its first character's start to its last character's end; its confidence is the
    mean of its characters' confidences. `skip_ids` (bos/eos/unk) are dropped like blanks.
    """
    if log_probs.ndim != 2 or log_probs.shape[0] == 0:
        return Transcription("", [], [])
    best = np.argmax(log_probs, axis=1)
    posteriors = np.exp(
        np.take_along_axis(log_probs, best[:, None], axis=1)[:, 0].astype(np.float64)
    )
    change = np.flatnonzero(np.diff(best)) + 1
    starts = np.concatenate(([0], change)).tolist()
    ends = np.concatenate((change, [best.size])).tolist()
    chars: list[TimedToken] = []
    words: list[TimedToken] = []
    current: list[TimedToken] = []

    def close_word() -> None:
        if current:
            words.append(
                TimedToken(
                    "".join(c.text for c in current),
                    current[0].start_s,
                    current[-1].end_s,
                    float(np.mean([c.confidence for c in current])),
                )
            )
            current.clear()

    for start, end in zip(starts, ends, strict=True):
        token_id = int(best[start])
        if token_id == blank_id or token_id in skip_ids:
            continue
        if token_id == delimiter_id:
            close_word()
            continue
        text = id_to_token.get(token_id, "")
        if not text:
            continue
        token = TimedToken(
            text,
            round(start * frame_duration_s, 4),
            round(end * frame_duration_s, 4),
            float(posteriors[start:end].mean()),
        )
        chars.append(token)
        current.append(token)
    close_word()
    return Transcription(" ".join(w.text for w in words), chars, words)
