"""The inference resource: hands a ready engine to the transcripts stage."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from asr_assets.core.decoding import CtcVocabulary
from asr_assets.inference.base import InferenceEngine
from asr_assets.inference.model_dir import read_vocabulary


class InferenceResource(dg.ConfigurableResource):
    """Opens an engine for the duration of one stage; engines are costly, so one per run."""

    @abstractmethod
    @contextmanager
    def open_engine(self) -> Iterator[InferenceEngine]: ...

    @abstractmethod
    def vocabulary(self) -> CtcVocabulary:
        """The model's tokens, for alignment; cheap (no weights are loaded)."""

    def unavailable_reason(self) -> str | None:
        """None when a run could use inference now; else why not (sensors skip with it)."""
        return None


class LocalInferenceResource(InferenceResource):
    """Torch on this machine's CPU, from a verified model directory (ASR_MODEL_DIR)."""

    model_dir: str = Field(description="Hugging Face CTC model directory with SHA256SUMS.")
    num_threads: int | None = Field(default=None, description="torch intra-op threads.")
    max_batch_size: int = Field(default=16, ge=1, le=256)
    max_batch_seconds: float = Field(
        default=120.0, gt=0, description="Padded audio seconds per batch (bounds memory)."
    )

    def vocabulary(self) -> CtcVocabulary:
        return read_vocabulary(Path(self.model_dir))

    @contextmanager
    def open_engine(self) -> Iterator[InferenceEngine]:
        from asr_assets.inference.local import LocalTorchEngine

        engine = LocalTorchEngine(
            Path(self.model_dir),
            num_threads=self.num_threads,
            max_batch_size=self.max_batch_size,
            max_batch_seconds=self.max_batch_seconds,
        )
        try:
            yield engine
        finally:
            engine.close()
