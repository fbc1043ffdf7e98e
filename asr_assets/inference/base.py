"""The engine protocol every inference backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.models import ModelInfo


@dataclass(frozen=True)
class Emissions:
    """CTC log-probabilities (frames × vocabulary) for one phrase, padding frames removed."""

    log_probs: np.ndarray
    frame_duration_s: float

    @property
    def num_frames(self) -> int:
        return int(self.log_probs.shape[0])


class InferenceError(RuntimeError):
    """The engine could not produce emissions for a batch (the caller isolates the phrase)."""


@runtime_checkable
class InferenceEngine(Protocol):
    """Turns 16 kHz mono float32 clips into CTC emissions.

    Engines own batching limits (`max_batch_size`, `max_batch_samples`) because the best values
    depend on the backend; callers plan batches with them and must not exceed them.
    """

    name: str
    model: ModelInfo
    vocabulary: CtcVocabulary
    max_batch_size: int
    max_batch_samples: int

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]: ...

    def close(self) -> None: ...
