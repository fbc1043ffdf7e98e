"""What every stage shares: stage summaries, error carry-over and metadata rendering."""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import pyarrow as pa

from asr_assets.core.errors import PhraseError, ReasonCode, Stage
from asr_assets.core.storage import stage_table_key
from asr_assets.observability.logging import (
    redact,
    register_sensitive_digests,
    sensitive_digest,
)
from asr_assets.resources.object_store import ObjectStore


@dataclass
class StageSummary:
    """Counts that must reconcile: phrases_in == phrases_ok + phrases_errored."""

    stage: Stage
    partition_key: str
    phrases_in: int = 0
    phrases_ok: int = 0
    phrases_errored: int = 0
    errors_by_reason: Counter[str] = field(default_factory=Counter)
    timings_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    preview: list[Mapping[str, object]] = field(default_factory=list)
    #: Rows of the table the stage wrote (`dagster/row_count`); None: one row per phrase.
    row_count: int | None = None

    def check_reconciles(self) -> None:
        if self.phrases_in != self.phrases_ok + self.phrases_errored:
            raise ReconciliationError(
                f"{self.stage} {self.partition_key}: {self.phrases_in} phrases in, "
                f"{self.phrases_ok} ok + {self.phrases_errored} errored"
            )

    def count_errors(self, reasons: Iterable[str | None]) -> None:
        for reason in reasons:
            if reason is not None:
                self.errors_by_reason[reason] += 1


class ReconciliationError(RuntimeError):
    """A stage lost or invented phrases: a bug, so the run fails loudly."""


def error_fields(stage: Stage, error: PhraseError) -> dict[str, object]:
    return {
        "error_stage": stage.value,
        "error_reason": error.reason.value,
        "error_message": error.message[:2000],
    }


def carried_error(row: Mapping[str, object]) -> dict[str, object] | None:
    """The error fields of an upstream row that already failed, else None."""
    if row.get("error_reason") is None:
        return None
    return {
        "error_stage": row["error_stage"],
        "error_reason": row["error_reason"],
        "error_message": row["error_message"],
    }


def key_fields(row: Mapping[str, object]) -> dict[str, object]:
    return {
        "activity_id": row["activity_id"],
        "phrase_index": row["phrase_index"],
        "tenant_id": row.get("tenant_id"),
        "activity_date": row.get("activity_date"),
        "expected_text": row.get("expected_text"),
    }


def stage_error(stage: Stage, reason: ReasonCode, message: str) -> dict[str, object]:
    return error_fields(stage, PhraseError(reason, message))


def markdown_table(rows: list[Mapping[str, object]], limit: int = 10) -> str:
    if not rows:
        return "_no rows_"
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n… {len(rows) - limit} more rows")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|") if value is not None else ""


def partition_metadata(summary: StageSummary) -> dict[str, dg.MetadataValue]:
    """One partition's numbers, recorded on that partition's materialization only."""
    metadata: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(
            summary.phrases_in if summary.row_count is None else summary.row_count
        ),
        "phrases_in": dg.MetadataValue.int(summary.phrases_in),
        "phrases_ok": dg.MetadataValue.int(summary.phrases_ok),
        "phrases_errored": dg.MetadataValue.int(summary.phrases_errored),
        "reconciled": dg.MetadataValue.bool(
            summary.phrases_in == summary.phrases_ok + summary.phrases_errored
        ),
        "errors_by_reason": dg.MetadataValue.json(dict(sorted(summary.errors_by_reason.items()))),
    }
    for name, value in sorted(summary.timings_ms.items()):
        metadata[f"{name}_ms"] = dg.MetadataValue.float(round(value, 1))
    for name, value in summary.extra.items():
        metadata[name] = _metadata_value(value)
    if summary.preview:
        metadata["preview"] = dg.MetadataValue.md(markdown_table(list(summary.preview)))
    return redact_metadata(metadata)


def sensitive_digests_key(partition_key: str) -> str:
    return stage_table_key(Stage.ACTIVITIES, partition_key, "sensitive").replace(
        ".parquet", ".json"
    )


def save_sensitive_digests(store: ObjectStore, partition_key: str, values: list[object]) -> None:
    """Digests (never the values) of the partition's student ids, for the redaction of steps that
    run in other processes and never see the catalog."""
    digests = sorted({sensitive_digest(v) for v in values if isinstance(v, str) and len(v) >= 3})
    store.write_json(sensitive_digests_key(partition_key), digests)


def load_sensitive_digests(store: ObjectStore, partition_key: str) -> None:
    key = sensitive_digests_key(partition_key)
    if store.exists(key):
        payload = store.read_json(key)
        register_sensitive_digests(payload if isinstance(payload, list) else [])


def redact_metadata(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, dg.MetadataValue]:
    """Every text-bearing metadata value through the logs' sensitive-value redaction: a student
    id that landed in another column (a swapped catalog) must not reach the run history."""
    redacted: dict[str, dg.MetadataValue] = {}
    for name, value in metadata.items():
        if isinstance(value, dg.TextMetadataValue):
            redacted[name] = dg.MetadataValue.text(redact(value.text))
        elif isinstance(value, dg.MarkdownMetadataValue):
            redacted[name] = dg.MetadataValue.md(redact(value.md_str or ""))
        elif isinstance(value, dg.JsonMetadataValue):
            redacted[name] = dg.MetadataValue.json(redact(value.data))
        else:
            redacted[name] = value
    return redacted


def summary_metadata(summaries: list[StageSummary]) -> dict[str, dg.MetadataValue]:
    """Metadata true of every partition of the run, for the asset's `MaterializeResult`.

    Dagster copies a `MaterializeResult`'s metadata onto every partition the run materializes,
    so it carries nothing per day: each day's numbers go on that day's event through
    `partition_metadata` (`instrumentation.each_partition` records them).
    """
    return {
        "run_partitions": dg.MetadataValue.text(", ".join(s.partition_key for s in summaries)),
    }


def _metadata_value(value: object) -> dg.MetadataValue:
    if isinstance(value, dg.MetadataValue):
        return value
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, dict | list):
        return dg.MetadataValue.json(value)
    return dg.MetadataValue.text(str(value))


def column_values(table: pa.Table, name: str) -> list[object]:
    return table.column(name).to_pylist()
