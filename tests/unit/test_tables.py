import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_assets.core.tables import ERRORS_SCHEMA, ParquetSink, to_table


def test_parquet_sink_keeps_order_across_row_groups() -> None:
    sink = ParquetSink(ERRORS_SCHEMA, chunk_rows=3)
    for index in range(7):
        sink.append({"activity_id": "a", "phrase_index": index, "stage": "s", "reason_code": "r"})
    source = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    table = source.read()
    assert sink.num_rows == table.num_rows == 7
    assert source.metadata.num_row_groups == 3
    assert table.column("phrase_index").to_pylist() == list(range(7))
    assert table.schema == ERRORS_SCHEMA
    with pytest.raises(ValueError, match="closed"):
        sink.append({"activity_id": "a", "phrase_index": 9})


def test_empty_sink_gives_an_empty_table_with_the_schema() -> None:
    table = pq.read_table(io.BytesIO(ParquetSink(ERRORS_SCHEMA).getvalue()))
    assert table.num_rows == 0 and table.schema == ERRORS_SCHEMA


def test_unknown_columns_are_an_error_not_dropped() -> None:
    with pytest.raises(ValueError, match="not in the schema"):
        to_table([{"activity_id": "a", "phrase_index": 0, "surprise": 1}], ERRORS_SCHEMA)


def test_non_nullable_keys_are_enforced() -> None:
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, ValueError)):
        to_table(
            [{"activity_id": None, "phrase_index": 0, "stage": "s", "reason_code": "r"}],
            ERRORS_SCHEMA,
        )
