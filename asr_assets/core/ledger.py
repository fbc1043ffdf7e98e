"""The processing ledger: which phrases of a partition a run scored, with which model, and how.

Why a ledger when the commit protocol already replaces a partition atomically: the partition says
what is true now; the ledger says who made it so and keeps the history. Each run that commits a
partition first writes `ledger/activity_date=D/run-<run_id>.parquet`, one row per phrase of the
partition (scored or errored, stage and reason code, model), and then names that file in the
partition's `_SUCCESS` (`ledger`). So:
- the current ledger of a partition is the file its `_SUCCESS` names; other files are earlier
  commits (reruns, backfills) or attempts that never reached `_SUCCESS` (a crash between the two
  writes), and are kept as history, never read as current;
- a retried step of the same run writes the same file name again (idempotent), a new run writes
  a new one: neither can add rows to another run's ledger;
- `verify_commit` proves a committed partition exactly-once: every phrase of the catalog appears
  once, scored or errored, in the result tables and in the ledger, under the committing run.

This module is pure (tables in, tables and reports out); reading and writing is the store's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from asr_assets.core.errors import ReasonCode
from asr_assets.core.models import ModelInfo

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("activity_id", pa.string(), nullable=False),
        pa.field("phrase_index", pa.int32(), nullable=False),
        pa.field("tenant_id", pa.string()),
        pa.field("activity_date", pa.date32()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # "scored" | "errored"
        pa.field("stage", pa.string()),  # errored: the stage that rejected the phrase
        pa.field("reason_code", pa.string()),
        pa.field("engine", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("model_sha256", pa.string()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)

PhraseKey = tuple[str, int]


def ledger_table(
    run_id: str,
    model: ModelInfo,
    phrase_results: pa.Table,
    errors: pa.Table,
    recorded_at: datetime,
) -> pa.Table:
    """One row per phrase of the partition, from the run's result tables.

    Built column by column: a 100k-phrase day as Python dicts cost ~100 MB for a table of a few.
    """

    def column(table: pa.Table, name: str) -> pa.ChunkedArray | pa.Array:
        return table.column(name) if name in table.column_names else pa.nulls(table.num_rows)

    def constant(value: object, count: int) -> pa.Array:
        return pa.nulls(count) if value is None else pa.array([value] * count)

    def part(table: pa.Table, values: dict[str, object]) -> pa.Table:
        columns = [
            (values[field.name] if field.name in values else column(table, field.name))
            for field in LEDGER_SCHEMA
        ]
        count = table.num_rows
        arrays = [
            (constant(c, count) if not isinstance(c, pa.Array | pa.ChunkedArray) else c).cast(
                field.type
            )
            for c, field in zip(columns, LEDGER_SCHEMA, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=LEDGER_SCHEMA)

    common = {"run_id": run_id, "recorded_at": recorded_at}
    scored = part(
        phrase_results, {**common, "outcome": "scored", "stage": None, "reason_code": None}
    )
    errored = part(
        errors,
        {
            **common,
            "outcome": "errored",
            "engine": None,
            "model_name": model.name,
            "model_version": model.version,
            "model_sha256": model.sha256,
        },
    )
    # A stable sort: a key both scored and errored keeps scored first, as rows were appended.
    return pa.concat_tables([scored, errored]).sort_by(
        [("activity_id", "ascending"), ("phrase_index", "ascending")]
    )


def phrase_keys(table: pa.Table) -> list[PhraseKey]:
    return list(
        zip(
            table.column("activity_id").to_pylist(),
            table.column("phrase_index").to_pylist(),
            strict=True,
        )
    )


@dataclass
class CommitVerification:
    """What `verify_commit` found; `ok` means exactly once, nothing lost, nothing extra."""

    run_id: str
    phrases_expected: int
    phrases_scored: int
    phrases_errored: int
    duplicates: list[PhraseKey] = field(default_factory=list)
    missing: list[PhraseKey] = field(default_factory=list)  # expected, in no result table
    unexpected: list[PhraseKey] = field(default_factory=list)  # in results, not expected
    ledger_mismatches: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.missing)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates
            or self.missing
            or self.unexpected
            or self.ledger_mismatches
            or self.phrases_scored + self.phrases_errored != self.phrases_expected
        )


def _duplicates(keys: Iterable[PhraseKey]) -> list[PhraseKey]:
    return sorted(key for key, count in Counter(keys).items() if count > 1)


def verify_commit(
    expected: Iterable[PhraseKey],
    run_id: str,
    phrase_results: pa.Table,
    errors: pa.Table,
    ledger: pa.Table | None,
) -> CommitVerification:
    """Check a committed partition against the phrases that should be in it.

    `expected` is the partition's phrases as the catalog (or the activities stage) lists them.
    Every catalog row of a key that several rows claim leaves as a `duplicate_phrase` error row
    under that key (none of them scored): those rows are accounted for, not duplicates.
    """
    expected_rows = list(expected)
    scored = phrase_keys(phrase_results)
    failed = phrase_keys(errors)
    reasons = errors.column("reason_code").to_pylist()
    primary_failed = [
        key
        for key, reason in zip(failed, reasons, strict=True)
        if reason != ReasonCode.DUPLICATE_PHRASE.value
    ]
    committed = scored + failed
    wanted = set(expected_rows)
    present = set(committed)
    primary = scored + primary_failed
    report = CommitVerification(
        run_id=run_id,
        phrases_expected=len(expected_rows),
        phrases_scored=len(scored),
        phrases_errored=len(failed),
        duplicates=_duplicates(primary),
        missing=sorted(wanted - present),
        unexpected=sorted(present - wanted),
    )
    if ledger is None:
        report.ledger_mismatches.append("the partition names no ledger")
        return report
    runs = set(ledger.column("run_id").to_pylist())
    if runs != {run_id}:
        report.ledger_mismatches.append(f"ledger rows belong to runs {sorted(runs)}, not {run_id}")
    if Counter(phrase_keys(ledger)) != Counter(committed):
        report.ledger_mismatches.append("ledger phrases differ from the committed result tables")
    return report
