"""The one enumeration of reason codes, and the exception that carries one.

Every phrase that cannot be scored leaves the run as an error row with one of these codes, so
operators can count failures by cause across stages and runs.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Pipeline stage at which a phrase was judged; stored on every error row."""

    ACTIVITIES = "activities"
    PHRASE_AUDIO = "phrase_audio"
    TRANSCRIPTS = "transcripts"
    ALIGNMENTS = "alignments"
    LETTER_SCORES = "letter_scores"
    PUBLISH = "published_scores"


class ReasonCode(StrEnum):
    """Why a phrase (or a letter) could not be scored normally."""

    # Catalog rows
    MALFORMED_ROW = "malformed_row"
    INVALID_EXPECTED_TEXT = "invalid_expected_text"
    UNSAFE_AUDIO_KEY = "unsafe_audio_key"
    DUPLICATE_PHRASE = "duplicate_phrase"
    EXPECTED_TEXT_TOO_LONG = "expected_text_too_long"
    ACTIVITY_DATE_MISMATCH = "activity_date_mismatch"
    # A catalog file that cannot be read at all (corrupt, empty, missing contract columns): one
    # error row stands for the whole file, since its phrases cannot be listed.
    CATALOG_FILE_UNREADABLE = "catalog_file_unreadable"
    # Fetching audio
    AUDIO_MISSING = "audio_missing"
    AUDIO_TOO_LARGE = "audio_too_large"
    AUDIO_FETCH_FAILED = "audio_fetch_failed"
    # Decoding and validating audio
    AUDIO_EMPTY = "audio_empty"
    AUDIO_UNDECODABLE = "audio_undecodable"
    AUDIO_TOO_SHORT = "audio_too_short"
    AUDIO_TOO_LONG = "audio_too_long"
    AUDIO_SILENT = "audio_silent"
    AUDIO_CLIPPED = "audio_clipped"
    AUDIO_NON_FINITE = "audio_non_finite"
    AUDIO_BAD_SEGMENT = "audio_bad_segment"
    AUDIO_NO_SPEECH = "audio_no_speech"
    # Inference and decoding
    INFERENCE_FAILED = "inference_failed"
    EMISSIONS_MISSING = "emissions_missing"
    # Alignment (letter level: status `unaligned`)
    AUDIO_TOO_SHORT_FOR_SEQUENCE = "audio_too_short_for_sequence"
    ALIGNMENT_FAILED = "alignment_failed"
    # Upstream stage produced no row for the phrase (should never happen; counted, not hidden)
    MISSING_UPSTREAM = "missing_upstream"
    # Platform jobs (asr_assets/platform/jobs): inputs refused, and shards that failed
    KEY_OUTSIDE_PREFIX = "key_outside_prefix"
    MISSING_FIELD = "missing_field"
    SHARD_NONZERO_EXIT = "shard_nonzero_exit"
    SHARD_TIMEOUT = "shard_timeout"
    SHARD_BAD_OUTPUT = "shard_bad_output"
    SHARD_LAUNCH_FAILED = "shard_launch_failed"


class PhraseError(Exception):
    """A phrase-level failure with a reason code: becomes an error row, never crashes a run."""

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
