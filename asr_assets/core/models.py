"""Typed contracts between stages.

Rows cross stage boundaries as Arrow tables (see `tables.py`); these pydantic models are the
row-level contract those tables are built from and validated against, so a malformed row fails at
the boundary with a reason code instead of deep inside a stage.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from asr_assets.core.errors import ReasonCode, Stage

EXPECTED_TEXT_PATTERN = re.compile(r"^[a-z]( [a-z])*$")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PhraseRef(_Frozen):
    """Identifies one phrase of one activity; the join key of every stage table."""

    activity_id: Annotated[str, Field(min_length=1, max_length=256)]
    phrase_index: Annotated[int, Field(ge=0, le=100_000)]

    @property
    def phrase_id(self) -> str:
        return f"{self.activity_id}#{self.phrase_index}"


class ActivityPhrase(PhraseRef):
    """One catalog row: a phrase the student read, with its expected letters and recording."""

    tenant_id: Annotated[str, Field(min_length=1, max_length=128)]
    student_id: Annotated[str, Field(min_length=1, max_length=256)]
    activity_date: date
    expected_text: str
    audio_key: Annotated[str, Field(min_length=1)]
    audio_start_s: float | None = None
    audio_end_s: float | None = None
    created_at: datetime

    @field_validator("expected_text")
    @classmethod
    def _letters_only(cls, value: str) -> str:
        if not EXPECTED_TEXT_PATTERN.fullmatch(value):
            raise ValueError(
                "expected_text must be lower-case letters a-z separated by single spaces"
            )
        return value

    @model_validator(mode="after")
    def _segment_is_ordered(self) -> Self:
        start, end = self.audio_start_s, self.audio_end_s
        if (start is None) != (end is None):
            raise ValueError("audio_start_s and audio_end_s must be given together")
        if start is not None and end is not None and not (0.0 <= start < end):
            raise ValueError("audio segment must satisfy 0 <= audio_start_s < audio_end_s")
        return self

    @property
    def expected_letters(self) -> list[str]:
        return self.expected_text.split(" ")


class AudioClip(PhraseRef):
    """A decoded, validated 16 kHz mono clip stored content-addressed in the object store."""

    clip_key: str
    clip_sha256: str
    sample_rate: int
    num_samples: int
    duration_s: float
    source_format: str
    source_sample_rate: int
    source_channels: int
    peak: float
    rms_dbfs: float
    cached: bool = False


class Transcript(PhraseRef):
    """Greedy CTC decoding of one phrase: recognized letters with confidences and frame spans."""

    letters: list[str]
    confidences: list[float]
    frame_spans: list[tuple[int, int]]
    emissions_key: str
    num_frames: int
    frame_duration_s: float
    engine: str
    inference_ms: float

    @model_validator(mode="after")
    def _parallel_lists(self) -> Self:
        if not (len(self.letters) == len(self.confidences) == len(self.frame_spans)):
            raise ValueError("letters, confidences and frame_spans must have equal lengths")
        return self

    @property
    def text(self) -> str:
        return " ".join(self.letters)


class LetterStatus(StrEnum):
    CORRECT = "correct"
    SUBSTITUTED = "substituted"
    DELETED = "deleted"
    INSERTED = "inserted"
    UNALIGNED = "unaligned"
    #: The calibrated judgement could not tell correct from misread: a teacher should listen.
    UNCERTAIN = "uncertain"


class AlignmentMethod(StrEnum):
    CTC_FORCED = "ctc_forced"
    EDIT_DISTANCE_ONLY = "edit_distance_only"


class ModelInfo(_Frozen):
    """Identity of the model that produced a result; stamped on every result row."""

    name: str
    version: str
    sha256: str


class LetterScore(PhraseRef):
    """Judgement of one expected letter (or one inserted letter) of a phrase."""

    letter_index: int
    expected: str | None
    recognized: str | None
    status: LetterStatus
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    start_s: float | None
    end_s: float | None
    alignment_score: float | None
    unaligned_reason: ReasonCode | None = None
    model_name: str
    model_version: str
    model_sha256: str

    @model_validator(mode="after")
    def _span_is_ordered(self) -> Self:
        if self.start_s is not None and self.end_s is not None and self.end_s < self.start_s:
            raise ValueError("end_s must not precede start_s")
        return self


class PhraseResult(PhraseRef):
    """Roll-up of one scored phrase."""

    tenant_id: str
    activity_date: date
    expected_text: str
    transcript: str
    n_expected: int
    n_correct: int
    n_inserted: int
    accuracy: float
    duration_s: float
    inference_ms: float
    alignment_ms: float
    alignment_method: AlignmentMethod
    engine: str
    model_name: str
    model_version: str
    model_sha256: str


class ErrorRow(PhraseRef):
    """A phrase that left the run unscored, with the stage and reason."""

    tenant_id: str | None
    activity_date: date | None
    stage: Stage
    reason_code: ReasonCode
    message: str


class ActivityResult(_Frozen):
    """The per-activity record published to the consumer (one per activity, idempotent)."""

    activity_id: str
    tenant_id: str
    activity_date: date
    n_phrases: int
    n_scored: int
    n_errors: int
    n_expected_letters: int
    n_correct_letters: int
    accuracy: float | None
    model_name: str
    model_version: str
    model_sha256: str
    run_id: str
    idempotency_key: str
    phrases: list[dict[str, object]]


class PartitionManifest(_Frozen):
    """Contents of a result partition's `_SUCCESS` file: what a reader may trust."""

    partition: str
    run_id: str
    committed_at: datetime
    files: dict[str, str]
    row_counts: dict[str, int]
    model: ModelInfo
    phrases_in: int
    phrases_scored: int
    phrases_errored: int
    # The processing ledger file written by the committing run (core/ledger.py); None in
    # partitions committed before the ledger existed.
    ledger: str | None = None
    # The fencing generation: each commit of the partition writes the previous one + 1, with a
    # conditional write, so a stale run cannot overwrite a newer commit. 0 in older manifests.
    generation: int = 0
