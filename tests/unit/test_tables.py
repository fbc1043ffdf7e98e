import pyarrow as pa
import pytest

from asr_assets.core.tables import ERRORS_SCHEMA, TableBuilder, to_table


def test_table_builder_keeps_order_across_chunks() -> None:
    builder = TableBuilder(ERRORS_SCHEMA, chunk_rows=3)
    for index in range(7):
        builder.append(
            {"activity_id": "a", "phrase_index": index, "stage": "s", "reason_code": "r"}
        )
    table = builder.to_table()
    assert builder.num_rows == table.num_rows == 7
    assert table.column("phrase_index").to_pylist() == list(range(7))
    assert table.schema == ERRORS_SCHEMA


def test_empty_builder_gives_an_empty_table_with_the_schema() -> None:
    table = TableBuilder(ERRORS_SCHEMA).to_table()
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
