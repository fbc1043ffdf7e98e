"""A hostile catalog day through the whole graph with its quality gates.

Duplicate keys, null phrase indices, an uncastable value in a second file, text timestamps, an
overlong expected text, a row of another day and an unreadable file: each becomes error rows of
its own, the blocking gates pass, and every other activity of the day is published.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_assets.assets.letter_scores import read_quarantine, verify_partition
from asr_assets.checks import ALL_CHECKS
from asr_assets.definitions import ALL_ASSETS, build_definitions
from tests.support.data import tone, wav_bytes

pytestmark = pytest.mark.e2e

DAY = "2026-11-24"


def _row(activity: str, index: object, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "activity_id": activity,
        "tenant_id": "tenant-a",
        "student_id": "student-secret-7",
        "activity_date": date.fromisoformat(DAY),
        "phrase_index": index,
        "expected_text": "b d",
        "audio_key": "audio/good.wav",
        "audio_start_s": None,
        "audio_end_s": None,
        "created_at": datetime(2026, 11, 24, 9, tzinfo=UTC),
    }
    row.update(fields)
    return row


def _schema_with(name: str, type_: pa.DataType) -> pa.Schema:
    from asr_assets.core.tables import CATALOG_SCHEMA

    return pa.schema([pa.field(name, type_) if f.name == name else f for f in CATALOG_SCHEMA])


def test_a_hostile_catalog_costs_only_its_own_rows(tmp_path: Path, tiny_model_dir: Path) -> None:
    from asr_assets.core.tables import CATALOG_SCHEMA

    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "good.wav").write_bytes(wav_bytes(tone(1.2)))
    folder = tmp_path / "catalog" / "activities" / f"activity_date={DAY}"
    folder.mkdir(parents=True)
    good = [_row(f"good-{a}", i) for a in range(12) for i in range(3)]
    hostile = [
        _row("dup", 0),
        _row("dup", 0),
        _row("dup", 1),
        _row("nulls", None),
        _row("nulls", None),
        _row("long", 0, expected_text=" ".join("b" * 120)),
        _row("other-day", 0, activity_date=date(2026, 11, 23)),
    ]
    pq.write_table(
        pa.Table.from_pylist(good + hostile, schema=CATALOG_SCHEMA), folder / "a.parquet"
    )
    texts = _schema_with("phrase_index", pa.string())
    pq.write_table(
        pa.Table.from_pylist([_row("text-index", "0"), _row("text-index", "zero")], schema=texts),
        folder / "b.parquet",
    )
    stamps = _schema_with("created_at", pa.string())
    pq.write_table(
        pa.Table.from_pylist(
            [_row("text-time", 0, created_at="2026-11-24 10:33:38")], schema=stamps
        ),
        folder / "c.parquet",
    )
    (folder / "d.parquet").write_bytes(b"")

    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(tmp_path), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            partition_key=DAY,
            resources=definitions.resources,
            instance=instance,
            raise_on_error=False,
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    failed = [
        c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert failed == []
    store = definitions.resources["store"]
    assert read_quarantine(store, DAY) is None
    assert verify_partition(store, DAY).ok
    records = [
        json.loads(line)
        for path in tmp_path.rglob(f"activity_date={DAY}.jsonl")
        for line in path.read_text().splitlines()
    ]
    published = {r["activity_id"]: r for r in records}
    for activity in ["good-0", "good-1", "good-2", "good-3", "text-time"]:
        assert published[activity]["n_errors"] == 0, activity
    reasons = {
        activity: sorted(p.get("error") for p in published[activity]["phrases"] if "error" in p)
        for activity in ("dup", "nulls", "long", "other-day", "text-index")
    }
    assert reasons == {
        "dup": ["duplicate_phrase", "duplicate_phrase"],
        "nulls": ["malformed_row", "malformed_row"],
        "long": ["expected_text_too_long"],
        "other-day": ["activity_date_mismatch"],
        "text-index": ["malformed_row"],
    }
    assert published["dup"]["n_scored"] == 1
    assert published["catalog-file:d.parquet"]["phrases"] == [
        {"phrase_index": -1, "error": "catalog_file_unreadable"}
    ]


CANARY = "canary-student-4711"


def test_a_student_id_in_another_column_never_reaches_the_run_history(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from asr_assets.core.tables import CATALOG_SCHEMA

    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "good.wav").write_bytes(wav_bytes(tone(1.2)))
    folder = tmp_path / "catalog" / "activities" / f"activity_date={DAY}"
    folder.mkdir(parents=True)
    # A swapped export: the student id in expected_text, the letters in student_id, and the
    # same id as an activity id (a column every preview shows).
    rows = [_row(f"good-{i}", 0) for i in range(3)]
    rows += [_row("swapped", 0, student_id="b d", expected_text=CANARY)]
    rows += [_row(CANARY, 0, student_id=CANARY)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), folder / "a.parquet")
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(tmp_path), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            partition_key=DAY,
            resources=definitions.resources,
            instance=instance,
            raise_on_error=False,
        )
        history = "\n".join(
            str(record.event_log_entry)
            for record in instance.get_records_for_run(result.run_id).records
        )
    assert "activities" in history and "[redacted]" in history
    assert CANARY not in history
