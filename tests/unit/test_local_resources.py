from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from asr_assets.core.storage import SUCCESS_FILE
from asr_assets.resources.catalog import DuckDBActivityCatalog
from asr_assets.resources.object_store import (
    InsufficientSpaceError,
    LocalObjectStore,
    ObjectNotFoundError,
)
from asr_assets.resources.publisher import LocalJsonlPublisher
from tests.support.data import PhraseSpec, standard_day, write_day


def test_local_store_round_trip_and_missing(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path))
    store.write_bytes("a/b/c.bin", b"xyz")
    assert store.read_bytes("a/b/c.bin") == b"xyz" and store.size("a/b/c.bin") == 3
    with pytest.raises(ObjectNotFoundError):
        store.read_bytes("a/b/missing.bin")
    assert store.size("a/b/missing.bin") is None


def test_local_store_refuses_unsafe_keys(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path / "root"))
    with pytest.raises(ValueError):
        store.write_bytes("../escape.bin", b"x")
    assert not (tmp_path / "escape.bin").exists()


def test_listing_pages_in_order(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path))
    for index in range(25):
        store.write_bytes(f"audio/x/{index:03d}.wav", b"1")
    store.write_bytes("other/zzz.wav", b"1")
    page = store.list_page("audio/", max_keys=10)
    assert [o.key for o in page.objects][:2] == ["audio/x/000.wav", "audio/x/001.wav"]
    assert page.next_token == "audio/x/009.wav"
    assert [o.key for o in store.iter_objects("audio/")] == [
        f"audio/x/{i:03d}.wav" for i in range(25)
    ]


def test_disk_guard_refuses_writes_into_the_reserve(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=10**18)
    with pytest.raises(InsufficientSpaceError):
        store.write_bytes("a.bin", b"x")
    assert not (tmp_path / "a.bin").exists()


def test_commit_makes_partition_visible_only_with_success(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path))
    table = pa.table({"x": [1, 2]})
    store.write_table("results/_staging/run1/t.parquet", table)
    prefix = "results/letter_scores/activity_date=2026-11-27"
    assert store.read_committed(prefix) is None
    keys = store.commit_partition(
        {"letter_scores": "results/_staging/run1/t.parquet"},
        {"letter_scores": prefix},
        {"run_id": "run1"},
    )
    manifest = store.read_committed(prefix)
    assert manifest is not None and manifest["files"] == keys
    assert store.read_table(keys["letter_scores"]).equals(table)
    assert not (tmp_path / "results" / "_staging").exists()
    # A second commit replaces the files rather than adding to them.
    store.write_table("results/_staging/run2/t.parquet", pa.table({"x": [3]}))
    store.commit_partition(
        {"letter_scores": "results/_staging/run2/t.parquet"},
        {"letter_scores": prefix},
        {"run_id": "run2"},
    )
    files = sorted(p.name for p in (tmp_path / prefix).iterdir())
    assert files == [SUCCESS_FILE, "part-run2.parquet"]
    assert not store.exists(keys["letter_scores"])  # the old run's file is gone
    assert store.read_committed(prefix)["run_id"] == "run2"  # type: ignore[index]


def test_duckdb_catalog_reads_one_partition(tmp_path: Path) -> None:
    standard_day(tmp_path, date(2026, 11, 27))
    write_day(tmp_path, date(2026, 11, 28), [PhraseSpec("other", 0, "a", b"x", "audio/o.wav")])
    catalog = DuckDBActivityCatalog(root=str(tmp_path))
    table = catalog.fetch_activities("2026-11-27")
    assert table.num_rows == 10
    assert set(table.column("activity_date").to_pylist()) == {date(2026, 11, 27)}
    assert table.column("activity_id").to_pylist()[0] == "act-1"
    assert catalog.fetch_activities("2026-01-01").num_rows == 0


def test_duckdb_catalog_tenant_filter_is_bound(tmp_path: Path) -> None:
    standard_day(tmp_path, date(2026, 11, 27))
    catalog = DuckDBActivityCatalog(root=str(tmp_path))
    assert catalog.fetch_activities("2026-11-27", ["tenant-b"]).num_rows == 2
    assert catalog.fetch_activities("2026-11-27", ["x' OR '1'='1"]).num_rows == 0


def test_jsonl_publisher_is_idempotent(tmp_path: Path) -> None:
    from asr_assets.core.models import ActivityResult

    store = LocalObjectStore(root=str(tmp_path))
    publisher = LocalJsonlPublisher(store=store)
    record = ActivityResult(
        activity_id="a1",
        tenant_id="t",
        activity_date=date(2026, 11, 27),
        n_phrases=1,
        n_scored=1,
        n_errors=0,
        n_expected_letters=3,
        n_correct_letters=3,
        accuracy=1.0,
        model_name="m",
        model_version="1",
        model_sha256="f" * 64,
        run_id="r1",
        idempotency_key="k1",
        phrases=[],
    )
    assert publisher.publish("2026-11-27", [record]).published == 1
    again = publisher.publish("2026-11-27", [record])
    assert (again.published, again.duplicates) == (0, 1)
    newer = record.model_copy(update={"run_id": "r2", "idempotency_key": "k2"})
    assert publisher.publish("2026-11-27", [newer]).published == 1
    lines = Path(publisher.destination("2026-11-27")).read_text().splitlines()
    assert len(lines) == 1 and '"run_id": "r2"' in lines[0]
