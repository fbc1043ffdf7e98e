from datetime import date

import pytest

from asr_assets.core.batching import bucket_length, plan_batches
from asr_assets.core.sql import Dialect, activities_query, athena_parameters
from asr_assets.core.storage import (
    UnsafeKeyError,
    emissions_key,
    result_prefix,
    stage_table_key,
    validate_key,
)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/abs/path.wav",
        "a/../../b",
        "a//b",
        "a\\b.wav",
        "C:/x.wav",
        "a/\x00b",
        "a\nb",
        "",
        "x" * 1025,
        "./a",
    ],
)
def test_unsafe_keys_are_rejected(key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        validate_key(key)


@pytest.mark.parametrize("key", ["audio/2026-11-27/act-1/0.wav", "a", "été/ü.flac", "x" * 1024])
def test_safe_keys_pass(key: str) -> None:
    assert validate_key(key) == key


def test_layout_is_deterministic() -> None:
    assert stage_table_key("transcripts", "2026-11-27") == (
        "stages/transcripts/activity_date=2026-11-27/manifest.parquet"
    )
    assert result_prefix("errors", "2026-11-27") == "results/errors/activity_date=2026-11-27"
    assert emissions_key("f" * 64, "ab" + "0" * 62).startswith(
        "cache/emissions/model=ffffffffffffffff/ab/"
    )
    # int8 emissions of the same model and audio live apart from the float ones
    assert emissions_key("f" * 64, "ab" + "0" * 62, "int8").startswith(
        "cache/emissions/model=ffffffffffffffff-int8/ab/"
    )
    with pytest.raises(ValueError):
        result_prefix("secrets", "2026-11-27")


def test_duckdb_query_binds_every_value() -> None:
    hostile = "x'; DROP TABLE activities; --"
    query = activities_query(Dialect.DUCKDB, "src", date(2026, 11, 27), [hostile, "t2"])
    assert hostile not in query.sql
    assert query.sql.count("?") == 3
    assert query.parameters == [date(2026, 11, 27), hostile, "t2"]


def test_athena_query_uses_pyformat_parameters() -> None:
    hostile = "t' OR '1'='1"
    query = activities_query(Dialect.ATHENA, "db.activities", date(2026, 11, 27), [hostile])
    assert "%(activity_date)s" in query.sql and "%(tenant_0)s" in query.sql
    assert hostile not in query.sql
    assert athena_parameters(query) == {"activity_date": date(2026, 11, 27), "tenant_0": hostile}


def test_bucket_length() -> None:
    buckets = [16_000, 32_000, 64_000]
    assert bucket_length(1, buckets) == 16_000
    assert bucket_length(16_001, buckets) == 32_000
    assert bucket_length(70_000, buckets) == 128_000


def test_plan_batches_groups_similar_lengths_within_limits() -> None:
    lengths = [16_000, 160_000, 17_000, 150_000, 15_000, 16_500]
    plans = plan_batches(lengths, max_batch_size=3, max_batch_samples=400_000)
    assert sorted(i for plan in plans for i in plan.indices) == list(range(len(lengths)))
    for plan in plans:
        assert len(plan.indices) <= 3
        assert plan.padded_length * len(plan.indices) <= 400_000 or len(plan.indices) == 1
        assert plan.padded_length == max(lengths[i] for i in plan.indices)
    # the three short clips ride together, not with the long ones
    assert sorted(plans[0].indices) == [0, 4, 5]


def test_plan_batches_never_drops_an_oversized_input() -> None:
    plans = plan_batches([10_000_000, 10], max_batch_samples=1000)
    assert sorted(i for p in plans for i in p.indices) == [0, 1]
