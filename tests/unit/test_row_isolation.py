"""Per-row isolation in the activities stage: one bad row or file never costs the day."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_assets.assets.activities import build_activities
from asr_assets.core.storage import UnsafeKeyError, confine_audio_key, stage_table_key
from asr_assets.core.tables import ACTIVITIES_SCHEMA, CATALOG_SCHEMA
from asr_assets.resources.catalog import DuckDBActivityCatalog, conform_catalog_table
from asr_assets.resources.object_store import LocalObjectStore

DAY = "2026-11-24"


def _row(activity: str, index: object, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "activity_id": activity,
        "tenant_id": "tenant-a",
        "student_id": "student-secret-9",
        "activity_date": date.fromisoformat(DAY),
        "phrase_index": index,
        "expected_text": "b d",
        "audio_key": f"audio/{activity}/{index}.wav",
        "audio_start_s": None,
        "audio_end_s": None,
        "created_at": datetime(2026, 11, 24, 9, tzinfo=UTC),
    }
    row.update(fields)
    return row


def _folder(root: Path) -> Path:
    folder = root / "catalog" / "activities" / f"activity_date={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(root: Path, name: str, rows: list[dict[str, object]], schema=CATALOG_SCHEMA) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), _folder(root) / name)


def _outcomes(root: Path, **kwargs: object) -> dict[tuple[str, int], list[str | None]]:
    store = LocalObjectStore(root=str(root), min_free_bytes=0)
    summary = build_activities(DuckDBActivityCatalog(root=str(root)), store, DAY, **kwargs)
    summary.check_reconciles()
    table = store.read_table(stage_table_key("activities", DAY), ACTIVITIES_SCHEMA)
    outcomes: dict[tuple[str, int], list[str | None]] = {}
    for row in table.to_pylist():
        outcomes.setdefault((row["activity_id"], row["phrase_index"]), []).append(
            row["error_reason"]
        )
    return outcomes


def test_a_duplicate_key_errors_only_its_own_rows(tmp_path: Path) -> None:
    _write(tmp_path, "part-0.parquet", [_row("a", 0), _row("a", 0), _row("a", 1), _row("b", 0)])
    outcomes = _outcomes(tmp_path)
    assert outcomes[("a", 0)] == ["duplicate_phrase", "duplicate_phrase"]
    assert outcomes[("a", 1)] == [None] and outcomes[("b", 0)] == [None]


def test_null_phrase_indices_are_distinct_malformed_rows(tmp_path: Path) -> None:
    _write(tmp_path, "part-0.parquet", [_row("a", None), _row("a", None), _row("b", 0)])
    outcomes = _outcomes(tmp_path)
    nulls = {key: value for key, value in outcomes.items() if key[0] == "a"}
    assert len(nulls) == 2 and all(v == ["malformed_row"] for v in nulls.values())
    assert all(index < 0 for _, index in nulls)
    assert outcomes[("b", 0)] == [None]


def test_one_uncastable_value_in_a_second_file_errors_only_its_row(tmp_path: Path) -> None:
    _write(tmp_path, "part-0.parquet", [_row("a", 0), _row("a", 1)])
    text_schema = pa.schema(
        [
            pa.field("phrase_index", pa.string()) if f.name == "phrase_index" else f
            for f in CATALOG_SCHEMA
        ]
    )
    _write(tmp_path, "part-1.parquet", [_row("b", "0"), _row("b", "zero")], schema=text_schema)
    outcomes = _outcomes(tmp_path)
    assert outcomes[("a", 0)] == [None] and outcomes[("a", 1)] == [None]
    assert outcomes[("b", 0)] == [None]
    assert [v for k, v in outcomes.items() if k[0] == "b" and k[1] < 0] == [["malformed_row"]]


def test_text_timestamps_are_parsed() -> None:
    table = pa.Table.from_pylist(
        [
            _row("a", 0, created_at="2026-11-24 10:33:38"),
            _row("a", 1, created_at="2026-11-24T10:33:38Z"),
            _row("a", 2, created_at="yesterday"),
        ],
        schema=pa.schema(
            [
                pa.field("created_at", pa.string()) if f.name == "created_at" else f
                for f in CATALOG_SCHEMA
            ]
        ),
    )
    fetched = conform_catalog_table(table)
    created = fetched.table.column("created_at").to_pylist()
    assert created[0] == datetime(2026, 11, 24, 10, 33, 38, tzinfo=UTC) == created[1]
    assert created[2] is None and fetched.row_issues == {2: ["created_at"]}


def test_an_overlong_expected_text_has_its_own_reason(tmp_path: Path) -> None:
    long_text = " ".join("b" * 120)
    _write(tmp_path, "part-0.parquet", [_row("a", 0, expected_text=long_text), _row("a", 1)])
    outcomes = _outcomes(tmp_path)
    assert outcomes[("a", 0)] == ["expected_text_too_long"] and outcomes[("a", 1)] == [None]
    assert _outcomes(tmp_path, max_expected_letters=200)[("a", 0)] == [None]


def test_a_row_of_another_day_is_an_error_of_the_folder_day(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "part-0.parquet",
        [_row("a", 0, activity_date=date(2026, 11, 23)), _row("a", 1)],
    )
    outcomes = _outcomes(tmp_path)
    assert outcomes[("a", 0)] == ["activity_date_mismatch"] and outcomes[("a", 1)] == [None]


@pytest.mark.parametrize(
    "content",
    [b"", b"PAR1 this is not parquet at all PAR1", "schemaless"],
    ids=["zero_bytes", "corrupt", "schemaless"],
)
def test_an_unreadable_catalog_file_is_its_own_permanent_error(
    tmp_path: Path, content: bytes | str
) -> None:
    _write(tmp_path, "part-0.parquet", [_row("a", 0), _row("a", 1)])
    if content == "schemaless":
        pq.write_table(pa.table({"something": [1, 2]}), _folder(tmp_path) / "part-1.parquet")
    else:
        (_folder(tmp_path) / "part-1.parquet").write_bytes(content)  # type: ignore[arg-type]
    outcomes = _outcomes(tmp_path)
    assert outcomes[("a", 0)] == [None] and outcomes[("a", 1)] == [None]
    assert outcomes[("catalog-file:part-1.parquet", -1)] == ["catalog_file_unreadable"]


def test_audio_keys_are_confined_to_audio_prefixes(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "part-0.parquet",
        [
            _row("a", 0, audio_key="cache/audio/ab/abcdef.flac"),
            _row("a", 1, audio_key="results/letter_scores/activity_date=2026-11-24/_SUCCESS"),
            _row("a", 2, audio_key="catalog/activities/x.parquet"),
            _row("a", 3),
        ],
    )
    outcomes = _outcomes(tmp_path)
    assert [outcomes[("a", i)] for i in range(4)] == [["unsafe_audio_key"]] * 3 + [[None]]


def test_tenant_templated_prefixes_confine_rows_to_their_tenant() -> None:
    prefixes = ["tenants/{tenant}/audio/"]
    assert confine_audio_key("tenants/z/audio/1.wav", "z", prefixes)
    for key, tenant in [("tenants/y/audio/1.wav", "z"), ("tenants/z/audio/1.wav", "")]:
        with pytest.raises(UnsafeKeyError):
            confine_audio_key(key, tenant, prefixes)
