"""Arrow schemas of the tables stages exchange and the result partition.

Stage tables carry every phrase of the partition: a phrase that failed earlier keeps its row
with `error_stage`/`error_reason` filled, so each stage's row count equals the partition's phrase
count and reconciliation is a simple count, not a join.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

KEY_FIELDS = [
    pa.field("activity_id", pa.string(), nullable=False),
    pa.field("phrase_index", pa.int32(), nullable=False),
    pa.field("tenant_id", pa.string()),
    pa.field("activity_date", pa.date32()),
    pa.field("expected_text", pa.string()),
]
ERROR_FIELDS = [
    pa.field("error_stage", pa.string()),
    pa.field("error_reason", pa.string()),
    pa.field("error_message", pa.string()),
]

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("activity_id", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("student_id", pa.string()),
        pa.field("activity_date", pa.date32()),
        pa.field("phrase_index", pa.int32()),
        pa.field("expected_text", pa.string()),
        pa.field("audio_key", pa.string()),
        pa.field("audio_start_s", pa.float64()),
        pa.field("audio_end_s", pa.float64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

ACTIVITIES_SCHEMA = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("audio_key", pa.string()),
        pa.field("audio_start_s", pa.float64()),
        pa.field("audio_end_s", pa.float64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        *ERROR_FIELDS,
    ]
)

PHRASE_AUDIO_SCHEMA = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("clip_key", pa.string()),
        pa.field("clip_sha256", pa.string()),
        pa.field("num_samples", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("source_format", pa.string()),
        pa.field("source_sample_rate", pa.int32()),
        pa.field("source_channels", pa.int32()),
        pa.field("peak", pa.float32()),
        pa.field("rms_dbfs", pa.float32()),
        pa.field("cached", pa.bool_()),
        *ERROR_FIELDS,
    ]
)

_MODEL_FIELDS = [
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("model_sha256", pa.string()),
]

TRANSCRIPTS_SCHEMA = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("clip_key", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("transcript", pa.string()),
        pa.field("letters", pa.list_(pa.string())),
        pa.field("confidences", pa.list_(pa.float32())),
        pa.field("frame_starts", pa.list_(pa.int32())),
        pa.field("frame_ends", pa.list_(pa.int32())),
        pa.field("anomalies", pa.list_(pa.string())),
        pa.field("emissions_key", pa.string()),
        pa.field("num_frames", pa.int32()),
        pa.field("frame_duration_s", pa.float64()),
        pa.field("engine", pa.string()),
        pa.field("inference_ms", pa.float64()),
        *_MODEL_FIELDS,
        *ERROR_FIELDS,
    ]
)

LETTER_SCORES_SCHEMA = pa.schema(
    [
        pa.field("activity_id", pa.string(), nullable=False),
        pa.field("phrase_index", pa.int32(), nullable=False),
        pa.field("letter_index", pa.int32(), nullable=False),
        pa.field("expected", pa.string()),
        pa.field("recognized", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("confidence", pa.float32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("alignment_score", pa.float32()),
        pa.field("unaligned_reason", pa.string()),
        *_MODEL_FIELDS,
    ]
)

PHRASE_RESULTS_SCHEMA = pa.schema(
    [
        pa.field("activity_id", pa.string(), nullable=False),
        pa.field("phrase_index", pa.int32(), nullable=False),
        pa.field("tenant_id", pa.string()),
        pa.field("activity_date", pa.date32()),
        pa.field("expected_text", pa.string()),
        pa.field("transcript", pa.string()),
        pa.field("n_expected", pa.int32()),
        pa.field("n_correct", pa.int32()),
        pa.field("n_inserted", pa.int32()),
        pa.field("accuracy", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("inference_ms", pa.float64()),
        pa.field("alignment_ms", pa.float64()),
        pa.field("alignment_method", pa.string()),
        pa.field("engine", pa.string()),
        *_MODEL_FIELDS,
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("activity_id", pa.string(), nullable=False),
        pa.field("phrase_index", pa.int32(), nullable=False),
        pa.field("tenant_id", pa.string()),
        pa.field("activity_date", pa.date32()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("message", pa.string()),
    ]
)

RESULT_SCHEMAS: Mapping[str, pa.Schema] = {
    "letter_scores": LETTER_SCORES_SCHEMA,
    "phrase_results": PHRASE_RESULTS_SCHEMA,
    "errors": ERRORS_SCHEMA,
}


def to_table(rows: Iterable[Mapping[str, object] | BaseModel], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema`'s columns; unknown keys are an error, not dropped."""
    records = [
        row.model_dump(mode="python") if isinstance(row, BaseModel) else dict(row) for row in rows
    ]
    names = set(schema.names)
    for record in records:
        extra = set(record) - names
        if extra:
            raise ValueError(f"columns {sorted(extra)} are not in the schema")
    table = pa.Table.from_pylist(records, schema=schema)
    # Arrow does not enforce `nullable=False` on construction; keys must never be null.
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"column {field.name!r} must not be null")
    return table


def error_mask_count(table: pa.Table) -> int:
    """Rows of a stage table that carry an error."""
    return table.num_rows - table.column("error_reason").null_count


def value_counts(values: pa.Array | pa.ChunkedArray) -> Counter[str]:
    """How often each non-null value occurs, counted in Arrow.

    A day's letter statuses as Python strings cost tens of megabytes for a handful of numbers.
    """
    return Counter(
        {
            str(item["values"]): int(item["counts"])
            for item in pc.value_counts(values).to_pylist()
            if item["values"] is not None
        }
    )


class ParquetSink:
    """Rows in, zstd Parquet bytes out, flushed as a row group every `chunk_rows` rows.

    A Python dict per row costs about a kilobyte, the same row as Arrow tens of bytes and as
    compressed Parquet a few: a stage that streams its rows here holds the compressed file and
    one chunk, whatever the size of the day. Rows are checked as `to_table` checks them (no
    unknown columns, no null keys).
    """

    def __init__(self, schema: pa.Schema, chunk_rows: int = 4096) -> None:
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.num_rows = 0
        self._pending: list[Mapping[str, object]] = []
        self._buffer = io.BytesIO()
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._buffer, schema, compression="zstd"
        )

    def append(self, row: Mapping[str, object]) -> None:
        if self._writer is None:
            raise ValueError("the sink is closed")
        self._pending.append(row)
        self.num_rows += 1
        if len(self._pending) >= self.chunk_rows:
            self._flush()

    def extend(self, rows: Iterable[Mapping[str, object]]) -> None:
        for row in rows:
            self.append(row)

    def _flush(self) -> None:
        if self._pending and self._writer is not None:
            self._writer.write_table(to_table(self._pending, self.schema))
            self._pending = []

    def getvalue(self) -> bytes:
        """Close the file and return its bytes; nothing can be appended afterwards."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self._buffer.getvalue()
