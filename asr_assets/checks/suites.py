"""The expectation suites, as data: which frames are validated and what is expected of them.

Each suite is a pandas frame plus expectation specs (a great-expectations class name, its
arguments, and the Dagster check the expectation belongs to). Building them needs no GX import,
so this module is cheap to import and its frames are easy to test; `DataQualityResource` turns the
specs into GX expectations and runs them in an ephemeral context.

Derived columns (a phrase's duration joined onto its letters, the count of letter rows per phrase,
an audio key's safety verdict) are computed here with pandas so GX can express the contract with
its stock expectations; the verdict of `validate_key` is reused rather than re-encoded as a regex
so the gate and the activities stage can never disagree on what a safe key is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from asr_assets.checks.models import ExpectationFailure
from asr_assets.core.errors import ReasonCode
from asr_assets.core.models import EXPECTED_TEXT_PATTERN, LETTERS, LetterStatus, PartitionManifest
from asr_assets.core.storage import UnsafeKeyError, validate_key
from asr_assets.core.tables import ACTIVITIES_SCHEMA, RESULT_SCHEMAS

ACTIVITIES_SCHEMA_CHECK = "activities_schema"
ACTIVITIES_KEYS_CHECK = "activities_keys"
ACTIVITIES_VALUES_CHECK = "activities_values"
ACTIVITIES_REJECTED_SHARE_CHECK = "activities_rejected_share"
ACTIVITIES_CHECKS = (
    ACTIVITIES_SCHEMA_CHECK,
    ACTIVITIES_KEYS_CHECK,
    ACTIVITIES_VALUES_CHECK,
    ACTIVITIES_REJECTED_SHARE_CHECK,
)

LETTER_SCORES_SCHEMA_CHECK = "letter_scores_schema"
LETTER_SCORES_VALUES_CHECK = "letter_scores_values"
LETTER_SCORES_COMPLETENESS_CHECK = "letter_scores_completeness"
LETTER_SCORES_ERROR_SHARE_CHECK = "letter_scores_error_share"
LETTER_SCORES_UNALIGNED_SHARE_CHECK = "letter_scores_unaligned_share"
LETTER_SCORES_MODEL_CHECK = "letter_scores_model"
LETTER_SCORES_CHECKS = (
    LETTER_SCORES_SCHEMA_CHECK,
    LETTER_SCORES_VALUES_CHECK,
    LETTER_SCORES_COMPLETENESS_CHECK,
    LETTER_SCORES_ERROR_SHARE_CHECK,
    LETTER_SCORES_UNALIGNED_SHARE_CHECK,
    LETTER_SCORES_MODEL_CHECK,
)

SHA256_PATTERN = r"^[0-9a-f]{64}$"
STATUSES = tuple(status.value for status in LetterStatus)
REASON_CODES = tuple(code.value for code in ReasonCode)
# Columns that may appear in a report; student_id never does (no stage table carries it, and
# this allow-list would drop it if one ever did).
_FORBIDDEN_COLUMNS = frozenset({"student_id", "audio_key"})


@dataclass(frozen=True)
class Expect:
    """One expectation: the GX class (in `great_expectations.expectations`) and its arguments."""

    check: str
    kind: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        names = [self.kwargs.get(k) for k in ("column", "column_A", "column_B")]
        names += list(self.kwargs.get("column_list") or [])
        return tuple(str(n) for n in names if n)

    @property
    def bounds(self) -> dict[str, Any]:
        keys = ("min_value", "max_value", "value", "value_set", "regex", "mostly", "or_equal")
        return {k: _jsonable(self.kwargs[k]) for k in keys if k in self.kwargs}


@dataclass(frozen=True)
class FrameSuite:
    """A frame and what is expected of it; `sample_columns` are the columns reports may show."""

    name: str
    frame: pd.DataFrame
    expectations: tuple[Expect, ...]
    sample_columns: tuple[str, ...]

    def sample(self, indices: Sequence[int], limit: int) -> tuple[dict[str, Any], ...]:
        return sample_rows(self.frame, self.sample_columns, indices, limit)


def sample_rows(
    frame: pd.DataFrame, columns: Sequence[str], indices: Sequence[int], limit: int
) -> tuple[dict[str, Any], ...]:
    """Report rows at positions `indices` (at most `limit`), allow-listed columns only."""
    shown = [c for c in columns if c in frame.columns and c not in _FORBIDDEN_COLUMNS]
    rows = frame.iloc[list(indices)[:limit]][shown]
    return tuple(
        {k: _counted(k, _jsonable(v)) for k, v in record.items()}
        for record in rows.to_dict("records")
    )


#: Columns that hold counts and positions. pandas turns an integer column with a null into
#: floats, so whether a sampled row said 4 or 4.0 depended on what else the frame (or the chunk
#: of it being judged) held; a report shows them as the integers they are.
_INTEGER_COLUMNS = frozenset(
    {"phrase_index", "letter_index", "n_expected", "n_letter_rows", "n_text_letters"}
)


def _counted(column: str, value: Any) -> Any:
    if column in _INTEGER_COLUMNS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class Thresholds:
    """The knobs the suites need (DataQualityResource holds the configured values)."""

    max_error_share: float
    max_unaligned_share: float
    max_rejected_share: float
    time_tolerance_s: float


def _jsonable(value: Any) -> Any:
    """A value safe for JSON metadata: NaN and NA become None, numpy scalars plain Python."""
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None:
        return None
    # pd.isna answers element-wise for array-likes; only a scalar can be "missing" here.
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, int | str | bool):
        return value
    return str(value)


def schema_failures(
    check: str, name: str, actual: pa.Schema, expected: pa.Schema
) -> list[ExpectationFailure]:
    """Columns missing, unexpected or of the wrong Arrow type, compared with the contract.

    Done on the Parquet file's Arrow schema rather than in GX: pandas dtypes cannot tell int32
    from int64 or a date from a string, and the contract in `core/tables.py` is an Arrow schema.
    """
    failures: list[ExpectationFailure] = []
    missing = [f.name for f in expected if f.name not in actual.names]
    extra = [n for n in actual.names if n not in expected.names]
    mistyped = [
        f"{f.name}: {actual.field(f.name).type} (expected {f.type})"
        for f in expected
        if f.name in actual.names and not actual.field(f.name).type.equals(f.type)
    ]
    if missing or extra:
        failures.append(
            ExpectationFailure(
                check=check,
                frame=name,
                expectation="arrow_columns_match_contract",
                columns=tuple(missing + extra),
                observed_value={"missing": missing, "unexpected": extra},
                bounds={"columns": list(expected.names)},
            )
        )
    if mistyped:
        failures.append(
            ExpectationFailure(
                check=check,
                frame=name,
                expectation="arrow_types_match_contract",
                columns=tuple(m.split(":", 1)[0] for m in mistyped),
                observed_value=mistyped,
            )
        )
    return failures


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or an all-null one when the table lacks it (the schema check reports that)."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype="object")


def _with_columns(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """A fresh 0..n index, and join-key columns present (null when the table lacks them)."""
    frame = frame.reset_index(drop=True)
    missing = {name: _column(frame, name) for name in names if name not in frame.columns}
    return frame.assign(**missing) if missing else frame


def _key_problem(key: object) -> str | None:
    if key is None or (isinstance(key, float) and pd.isna(key)):
        return "missing"
    try:
        validate_key(str(key))
    except UnsafeKeyError as exc:
        return str(exc)  # the rule broken, never the key itself
    return None


def _digest(key: object) -> str | None:
    if key is None or (isinstance(key, float) and pd.isna(key)):
        return None
    return hashlib.sha256(str(key).encode()).hexdigest()[:12]


# --- activities -------------------------------------------------------------------------------


def activities_suites(
    table: pa.Table, partition_key: str, thresholds: Thresholds
) -> tuple[list[FrameSuite], list[ExpectationFailure]]:
    """Suites over the activities stage table, and the schema failures found before GX runs.

    The stage table keeps every catalog row: rows the stage rejected carry `error_reason` and go
    no further. The value and key expectations therefore run on the accepted rows (what
    phrase_audio will fetch and score): a rejected row is already handled, counted and reported,
    and blocking a whole day for one malformed catalog row would undo the per-row error design.
    A broken catalog still stops the day through `activities_rejected_share`, the share of rows
    the stage had to reject.
    """
    preflight = schema_failures(
        ACTIVITIES_SCHEMA_CHECK, "activities", table.schema, ACTIVITIES_SCHEMA
    )
    frame = table.to_pandas().reset_index(drop=True)
    stage = pd.DataFrame(
        {
            "activity_id": _column(frame, "activity_id"),
            "phrase_index": _column(frame, "phrase_index"),
            "error_reason": _column(frame, "error_reason"),
        }
    )
    accepted = frame[_column(frame, "error_reason").isna()].reset_index(drop=True)
    accepted = accepted.assign(
        activity_date_iso=[
            None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)[:10]
            for v in _column(accepted, "activity_date")
        ],
        audio_key_problem=[_key_problem(k) for k in _column(accepted, "audio_key")],
        audio_key_digest=[_digest(k) for k in _column(accepted, "audio_key")],
    )
    keys, values = ACTIVITIES_KEYS_CHECK, ACTIVITIES_VALUES_CHECK
    accepted_expectations = (
        Expect(keys, "ExpectColumnValuesToNotBeNull", {"column": "activity_id"}),
        Expect(keys, "ExpectColumnValuesToNotBeNull", {"column": "phrase_index"}),
        Expect(keys, "ExpectColumnValuesToNotBeNull", {"column": "tenant_id"}),
        Expect(
            keys,
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["activity_id", "phrase_index"]},
        ),
        Expect(
            keys,
            "ExpectColumnValuesToBeBetween",
            {"column": "phrase_index", "min_value": 0, "max_value": 100_000},
        ),
        Expect(values, "ExpectColumnValuesToNotBeNull", {"column": "expected_text"}),
        Expect(
            values,
            "ExpectColumnValuesToMatchRegex",
            {"column": "expected_text", "regex": EXPECTED_TEXT_PATTERN.pattern},
        ),
        Expect(values, "ExpectColumnValuesToBeNull", {"column": "audio_key_problem"}),
        Expect(values, "ExpectColumnValuesToNotBeNull", {"column": "activity_date_iso"}),
        Expect(
            values,
            "ExpectColumnValuesToBeInSet",
            {"column": "activity_date_iso", "value_set": [partition_key]},
        ),
        Expect(values, "ExpectColumnValuesToNotBeNull", {"column": "created_at"}),
        Expect(
            values,
            "ExpectColumnValuesToBeBetween",
            {"column": "audio_start_s", "min_value": 0.0},
        ),
        Expect(
            values,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "audio_end_s",
                "column_B": "audio_start_s",
                "or_equal": False,
                "ignore_row_if": "either_value_is_missing",
            },
        ),
    )
    stage_expectations = (
        Expect(
            ACTIVITIES_REJECTED_SHARE_CHECK,
            "ExpectColumnValuesToBeNull",
            {"column": "error_reason", "mostly": round(1.0 - thresholds.max_rejected_share, 6)},
        ),
        Expect(
            ACTIVITIES_REJECTED_SHARE_CHECK,
            "ExpectColumnValuesToBeInSet",
            {"column": "error_reason", "value_set": list(REASON_CODES)},
        ),
    )
    suites = [
        FrameSuite(
            "activities_accepted",
            accepted,
            accepted_expectations,
            (
                "activity_id",
                "phrase_index",
                "tenant_id",
                "activity_date_iso",
                "expected_text",
                "audio_key_digest",
                "audio_key_problem",
                "audio_start_s",
                "audio_end_s",
            ),
        ),
        FrameSuite(
            "activities_stage",
            stage,
            stage_expectations if len(stage) else (),
            ("activity_id", "phrase_index", "error_reason"),
        ),
    ]
    return suites, preflight


# --- letter_scores ----------------------------------------------------------------------------


#: Letter columns the letter_scores suites read: all but the alignment score, which no
#: expectation, derivation or sample row uses.
LETTER_FRAME_COLUMNS = tuple(
    name for name in RESULT_SCHEMAS["letter_scores"].names if name != "alignment_score"
)
#: The expected-letter frame: its expectations, the counts derived from it, its sample rows.
EXPECTED_FRAME_COLUMNS = (
    *LETTER_FRAME_COLUMNS,
    "phrase_duration_s",
    "phrase_known",
    "n_expected",
    "expected_text",
    "expected_from_text",
)


PHRASE_KEY = ("activity_id", "phrase_index")
LETTER_SAMPLE_COLUMNS = (
    "activity_id",
    "phrase_index",
    "letter_index",
    "expected",
    "recognized",
    "status",
    "confidence",
    "start_s",
    "end_s",
    "phrase_duration_s",
    "phrase_known",
    "model_sha256",
)
EXPECTED_SAMPLE_COLUMNS = (*LETTER_SAMPLE_COLUMNS, "n_expected", "expected_from_text")
PHRASE_SAMPLE_COLUMNS = (
    "activity_id",
    "phrase_index",
    "expected_text",
    "n_expected",
    "n_letter_rows",
    "n_text_letters",
    "accuracy",
    "duration_s",
    "model_sha256",
)
OUTCOME_SAMPLE_COLUMNS = ("activity_id", "phrase_index", "outcome", "reason_code")


@dataclass(frozen=True)
class LetterScoresExpectations:
    """What is expected of each of the four letter_scores frames."""

    letters: tuple[Expect, ...]
    expected_letters: tuple[Expect, ...]
    phrases: tuple[Expect, ...]
    outcomes: tuple[Expect, ...]


def phrase_info_frame(phrases: pd.DataFrame) -> pd.DataFrame:
    """What each letter row is joined to: its phrase's duration, length and text."""
    return pd.DataFrame(
        {
            "activity_id": phrases["activity_id"],
            "phrase_index": phrases["phrase_index"],
            "phrase_duration_s": _column(phrases, "duration_s"),
            "n_expected": _column(phrases, "n_expected"),
            "expected_text": _column(phrases, "expected_text"),
            "phrase_known": True,
        }
    ).drop_duplicates(subset=list(PHRASE_KEY))


def letter_frames(
    letter_table: pa.Table | pa.RecordBatch, phrase_info: pd.DataFrame, thresholds: Thresholds
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The letter frame and the expected-letter frame (no insertions) of some letter rows.

    Every derived column is row-local given `phrase_info`, so the frames of consecutive chunks
    of the letter table, concatenated, equal the frames of the whole table.
    """
    phrase_key = list(PHRASE_KEY)
    # Only the columns some expectation, derivation or report reads: a 100k-phrase day has
    # 400k letter rows, and every column converted (and copied by each derived frame below)
    # cost tens of megabytes at the gate.
    letters = _with_columns(
        letter_table.select(
            [c for c in LETTER_FRAME_COLUMNS if c in letter_table.schema.names]
        ).to_pandas(),
        phrase_key,
    )
    joined = letters[phrase_key].merge(phrase_info, on=phrase_key, how="left")
    letters = letters.assign(
        phrase_duration_s=joined["phrase_duration_s"].to_numpy(),
        end_limit_s=(
            pd.to_numeric(joined["phrase_duration_s"], errors="coerce")
            + thresholds.time_tolerance_s
        ).to_numpy(),
        phrase_known=joined["phrase_known"].fillna(False).astype(bool).to_numpy(),
        n_expected=joined["n_expected"].to_numpy(),
        expected_text=joined["expected_text"].to_numpy(),
    )
    del joined
    status = _column(letters, "status")
    expected_rows = letters[status != LetterStatus.INSERTED.value]
    expected_rows = expected_rows[
        [c for c in EXPECTED_FRAME_COLUMNS if c in expected_rows.columns]
    ].reset_index(drop=True)
    # What only the expected-letter frame needs leaves the letter frame.
    letters = letters.drop(columns=["n_expected", "expected_text"])
    expected_rows = expected_rows.assign(
        expected_from_text=[
            _letter_at(text, index)
            for text, index in zip(
                _column(expected_rows, "expected_text"),
                _column(expected_rows, "letter_index"),
                strict=True,
            )
        ]
    )
    return letters, expected_rows


@dataclass
class PhraseLetterCounts:
    """Per phrase, what the expected-letter rows say: how many, and whether any is unaligned.

    Accumulated chunk by chunk; a phrase split across two chunks adds up.
    """

    counts: list[pd.Series] = field(default_factory=list)
    unaligned: set[tuple[Any, Any]] = field(default_factory=set)
    rows: int = 0

    def add(self, expected_rows: pd.DataFrame) -> None:
        self.rows += len(expected_rows)
        if not len(expected_rows):
            return
        self.counts.append(expected_rows.groupby(list(PHRASE_KEY)).size())
        status = _column(expected_rows, "status")
        is_unaligned = status == LetterStatus.UNALIGNED.value
        self.unaligned.update(
            zip(
                _column(expected_rows, "activity_id")[is_unaligned],
                _column(expected_rows, "phrase_index")[is_unaligned],
                strict=True,
            )
        )

    def letter_rows(self) -> pd.DataFrame:
        merged = self.counts[0] if len(self.counts) == 1 else pd.concat(self.counts)
        merged = merged.groupby(level=[0, 1]).sum() if len(self.counts) > 1 else merged
        return merged.rename("n_letter_rows").reset_index()


def phrase_frames(
    phrases: pd.DataFrame, errors: pd.DataFrame, letters: PhraseLetterCounts
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The phrase frame (with its letter-row counts) and the per-phrase outcome frame."""
    phrase_key = list(PHRASE_KEY)
    if letters.rows and len(phrases):
        phrases = phrases.merge(letters.letter_rows(), on=phrase_key, how="left")
    else:
        phrases = phrases.assign(n_letter_rows=0)
    unaligned_keys = letters.unaligned
    phrases = phrases.assign(
        phrase_unaligned=[
            (a, i) in unaligned_keys
            for a, i in zip(
                _column(phrases, "activity_id"), _column(phrases, "phrase_index"), strict=True
            )
        ],
        n_letter_rows=_column(phrases, "n_letter_rows").fillna(0).astype("int64"),
        n_text_letters=[
            len(str(text).split(" ")) if isinstance(text, str) else None
            for text in _column(phrases, "expected_text")
        ],
    )
    outcomes = pd.concat(
        [
            pd.DataFrame(
                {
                    "activity_id": phrases["activity_id"],
                    "phrase_index": phrases["phrase_index"],
                    "outcome": "scored",
                    "reason_code": None,
                }
            ),
            pd.DataFrame(
                {
                    "activity_id": errors["activity_id"],
                    "phrase_index": errors["phrase_index"],
                    "outcome": "errored",
                    "reason_code": _column(errors, "reason_code"),
                }
            ),
        ],
        ignore_index=True,
    )
    outcomes = outcomes.assign(
        unique_activity_id=outcomes["activity_id"].where(
            outcomes["reason_code"] != ReasonCode.DUPLICATE_PHRASE.value, None
        )
    )
    return phrases, outcomes


def letter_scores_expectations(
    manifest: PartitionManifest, thresholds: Thresholds
) -> LetterScoresExpectations:
    values = LETTER_SCORES_VALUES_CHECK
    complete = LETTER_SCORES_COMPLETENESS_CHECK
    model = LETTER_SCORES_MODEL_CHECK
    sha = manifest.model.sha256
    letter_expectations = (
        Expect(values, "ExpectColumnValuesToNotBeNull", {"column": "status"}),
        Expect(
            values, "ExpectColumnValuesToBeInSet", {"column": "status", "value_set": list(STATUSES)}
        ),
        Expect(values, "ExpectColumnValuesToNotBeNull", {"column": "confidence"}),
        Expect(
            values,
            "ExpectColumnValuesToBeBetween",
            {"column": "confidence", "min_value": 0.0, "max_value": 1.0},
        ),
        Expect(values, "ExpectColumnValuesToBeBetween", {"column": "start_s", "min_value": 0.0}),
        Expect(
            values,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "end_s",
                "column_B": "start_s",
                "or_equal": True,
                "ignore_row_if": "either_value_is_missing",
            },
        ),
        Expect(
            values,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "end_limit_s",
                "column_B": "end_s",
                "or_equal": True,
                "ignore_row_if": "either_value_is_missing",
            },
        ),
        Expect(
            values,
            "ExpectColumnValuesToBeInSet",
            {"column": "recognized", "value_set": list(LETTERS)},
        ),
        Expect(
            values,
            "ExpectColumnValuesToBeInSet",
            {"column": "unaligned_reason", "value_set": list(REASON_CODES)},
        ),
        Expect(
            complete, "ExpectColumnValuesToBeInSet", {"column": "phrase_known", "value_set": [True]}
        ),
        Expect(model, "ExpectColumnValuesToNotBeNull", {"column": "model_sha256"}),
        Expect(model, "ExpectColumnValuesToNotBeNull", {"column": "model_name"}),
        Expect(model, "ExpectColumnValuesToNotBeNull", {"column": "model_version"}),
        Expect(
            model,
            "ExpectColumnValuesToMatchRegex",
            {"column": "model_sha256", "regex": SHA256_PATTERN},
        ),
        Expect(
            model,
            "ExpectColumnUniqueValueCountToBeBetween",
            {"column": "model_sha256", "min_value": 0, "max_value": 1},
        ),
        Expect(
            model, "ExpectColumnValuesToBeInSet", {"column": "model_sha256", "value_set": [sha]}
        ),
    )
    expected_letter_expectations = (
        Expect(
            complete,
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["activity_id", "phrase_index", "letter_index"]},
        ),
        Expect(
            complete,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "n_expected",
                "column_B": "letter_index",
                "or_equal": False,
                "ignore_row_if": "either_value_is_missing",
            },
        ),
        Expect(
            complete,
            "ExpectColumnPairValuesToBeEqual",
            {
                "column_A": "expected",
                "column_B": "expected_from_text",
                "ignore_row_if": "either_value_is_missing",
            },
        ),
    )
    phrase_expectations = (
        # Weighted by phrases, not letters: one very long phrase cannot tip the day's share.
        Expect(
            LETTER_SCORES_UNALIGNED_SHARE_CHECK,
            "ExpectColumnValuesToNotBeInSet",
            {
                "column": "phrase_unaligned",
                "value_set": [True],
                "mostly": round(1.0 - thresholds.max_unaligned_share, 6),
            },
        ),
        Expect(
            complete,
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "n_expected", "column_B": "n_letter_rows"},
        ),
        Expect(
            complete,
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "n_expected", "column_B": "n_text_letters"},
        ),
        Expect(
            values,
            "ExpectColumnValuesToBeBetween",
            {"column": "accuracy", "min_value": 0.0, "max_value": 1.0},
        ),
        Expect(
            values,
            "ExpectColumnValuesToBeBetween",
            {"column": "duration_s", "min_value": 0.0, "strict_min": True},
        ),
        Expect(
            model, "ExpectColumnValuesToBeInSet", {"column": "model_sha256", "value_set": [sha]}
        ),
    )
    outcome_expectations = (
        # Every row of a key several catalog rows claim is a `duplicate_phrase` error (never
        # scored), so uniqueness is judged over the other outcomes; the row count still covers all.
        Expect(
            complete,
            "ExpectCompoundColumnsToBeUnique",
            {
                "column_list": ["unique_activity_id", "phrase_index"],
                "ignore_row_if": "any_value_is_missing",
            },
        ),
        Expect(complete, "ExpectTableRowCountToEqual", {"value": manifest.phrases_in}),
        Expect(
            LETTER_SCORES_ERROR_SHARE_CHECK,
            "ExpectColumnValuesToBeInSet",
            {
                "column": "outcome",
                "value_set": ["scored"],
                "mostly": round(1.0 - thresholds.max_error_share, 6),
            },
        ),
    )
    return LetterScoresExpectations(
        letter_expectations, expected_letter_expectations, phrase_expectations, outcome_expectations
    )


def result_preflight(schemas: Mapping[str, pa.Schema]) -> list[ExpectationFailure]:
    """Schema failures of the three result tables, from their stored Arrow schemas."""
    preflight: list[ExpectationFailure] = []
    for name, schema in RESULT_SCHEMAS.items():
        preflight += schema_failures(LETTER_SCORES_SCHEMA_CHECK, name, schemas[name], schema)
    return preflight


#: The phrase_results columns the phrase suites read (expectations, derivations, report rows).
PHRASE_FRAME_COLUMNS = (
    "activity_id",
    "phrase_index",
    "expected_text",
    "n_expected",
    "accuracy",
    "duration_s",
    "model_sha256",
)
ERROR_FRAME_COLUMNS = ("activity_id", "phrase_index", "reason_code")


def result_phrase_frames(
    tables: Mapping[str, pa.Table],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The phrase_results and errors tables as frames with a fresh index and their key columns.

    Only the columns the suites read are converted: a 100k-phrase day's transcripts, dates and
    engine names would cost tens of megabytes of Python objects no expectation looks at.
    """
    phrase_key = list(PHRASE_KEY)
    phrases, errors = tables["phrase_results"], tables["errors"]
    return (
        _with_columns(
            phrases.select(
                [c for c in PHRASE_FRAME_COLUMNS if c in phrases.column_names]
            ).to_pandas(),
            phrase_key,
        ),
        _with_columns(
            errors.select([c for c in ERROR_FRAME_COLUMNS if c in errors.column_names]).to_pandas(),
            phrase_key,
        ),
    )


def letter_scores_suites(
    manifest: PartitionManifest, tables: Mapping[str, pa.Table], thresholds: Thresholds
) -> tuple[list[FrameSuite], list[ExpectationFailure]]:
    """Suites over a committed result partition (the three tables its `_SUCCESS` names), whole.

    The great-expectations engine validates these frames; the native engine streams the letter
    rows instead (`DataQualityResource.validate_letter_scores`) and must reach the same verdicts.
    """
    preflight = result_preflight({name: table.schema for name, table in tables.items()})
    phrases, errors = result_phrase_frames(tables)
    letters, expected_rows = letter_frames(
        tables["letter_scores"], phrase_info_frame(phrases), thresholds
    )
    counts = PhraseLetterCounts()
    counts.add(expected_rows)
    phrases, outcomes = phrase_frames(phrases, errors, counts)
    expect = letter_scores_expectations(manifest, thresholds)
    suites = [
        FrameSuite("letter_scores", letters, expect.letters, LETTER_SAMPLE_COLUMNS),
        FrameSuite(
            "letter_scores_expected",
            expected_rows,
            expect.expected_letters,
            EXPECTED_SAMPLE_COLUMNS,
        ),
        FrameSuite("phrase_results", phrases, expect.phrases, PHRASE_SAMPLE_COLUMNS),
        FrameSuite("phrase_outcomes", outcomes, expect.outcomes, OUTCOME_SAMPLE_COLUMNS),
    ]
    return suites, preflight


def _letter_at(text: object, index: object) -> str | None:
    if not isinstance(text, str) or index is None or pd.isna(index):  # type: ignore[arg-type]
        return None
    letters = text.split(" ")
    position = int(index)  # type: ignore[call-overload]
    return letters[position] if 0 <= position < len(letters) else None
