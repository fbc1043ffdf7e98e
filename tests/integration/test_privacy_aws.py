"""Privacy on the production resources: SSE-KMS on every S3 write (moto server), the S3 read
cache forgetting erased keys and keeping its cap, and erasure's delete through AppSync."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asr_assets.resources.publisher import AppSyncPublisher
from asr_assets.resources.s3 import S3ObjectStore
from tests.integration.test_appsync_publisher import API_KEY, DAY, _records
from tests.support.graphql_server import AppSyncState, running_appsync
from tests.support.moto_server import MotoServer, aws_env, moto, s3_client  # noqa: F401

pytestmark = pytest.mark.integration

BUCKET = "asr-private"


@pytest.fixture
def kms_key(aws_env: MotoServer) -> str:  # noqa: F811
    import boto3

    kms = boto3.client("kms", endpoint_url=aws_env.endpoint, region_name="us-east-1")
    return str(kms.create_key(Description="asr test key")["KeyMetadata"]["KeyId"])


def _store(endpoint: str, cache: Path, **fields: object) -> S3ObjectStore:
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    return S3ObjectStore(
        bucket=BUCKET,
        prefix="p",
        endpoint_url=endpoint,
        cache_dir=str(cache),
        min_free_bytes=0,
        **fields,  # type: ignore[arg-type]
    )


def test_every_write_and_copy_is_encrypted_with_the_configured_key(
    aws_env: MotoServer,  # noqa: F811
    kms_key: str,
    tmp_path: Path,
) -> None:
    store = _store(aws_env.endpoint, tmp_path / "cache", kms_key_id=kms_key)
    store.write_bytes("audio/a/0.wav", b"child voice")
    store.write_json("results/x/_SUCCESS", {"ok": True})
    store.copy("audio/a/0.wav", "audio/a/copy.wav")
    client = s3_client(aws_env.endpoint)
    for key in ("p/audio/a/0.wav", "p/results/x/_SUCCESS", "p/audio/a/copy.wav"):
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert kms_key in head["SSEKMSKeyId"], key


def test_sse_can_be_aes256_or_left_to_the_bucket(aws_env: MotoServer, tmp_path: Path) -> None:  # noqa: F811
    store = _store(aws_env.endpoint, tmp_path / "c", server_side_encryption="AES256")
    store.write_bytes("k", b"x")
    assert store.encryption_arguments() == {"ServerSideEncryption": "AES256"}
    head = s3_client(aws_env.endpoint).head_object(Bucket=BUCKET, Key="p/k")
    assert head["ServerSideEncryption"] == "AES256"
    plain = store.model_copy(update={"server_side_encryption": "none"})
    assert plain.encryption_arguments() == {}


def test_erased_keys_leave_the_local_read_cache(aws_env: MotoServer, tmp_path: Path) -> None:  # noqa: F811
    store = _store(aws_env.endpoint, tmp_path / "cache")
    store.write_bytes("audio/a/0.wav", b"child voice")
    assert store.read_bytes("audio/a/0.wav") == b"child voice"
    blobs = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any(p.read_bytes() == b"child voice" for p in blobs)
    store.delete("audio/a/0.wav")
    store.forget_cached("audio/a/0.wav")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_local_read_cache_has_a_ttl_and_a_size_cap(aws_env: MotoServer, tmp_path: Path) -> None:  # noqa: F811
    store = _store(aws_env.endpoint, tmp_path / "cache")
    for i in range(4):
        store.write_bytes(f"audio/{i}.wav", bytes([i]) * 1000)
        store.read_bytes(f"audio/{i}.wav")
    objects = sorted((tmp_path / "cache" / "objects").rglob("*"))
    blobs = [p for p in objects if p.is_file()]
    now = time.time()
    for age, blob in enumerate(blobs):
        os.utime(blob, (now - 100 * age, now - 100 * age))
    assert store.prune_local_cache(max_bytes=10_000, ttl_s=250, now=now) == 1  # age 300 only
    assert store.prune_local_cache(max_bytes=1_500, ttl_s=250, now=now) == 2  # oldest first
    assert [p for p in blobs if p.is_file()] == blobs[:1]


@pytest.fixture
def appsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, AppSyncState]]:
    monkeypatch.setenv("ASR_RETRY_APPSYNC_INITIAL_S", "0.01")
    with running_appsync(api_key=API_KEY) as server:
        yield server


def test_retract_deletes_through_appsync_and_is_idempotent(
    appsync: tuple[str, AppSyncState],
) -> None:
    url, state = appsync
    publisher = AppSyncPublisher(url=url, api_key=API_KEY)
    assert publisher.publish(DAY, _records(3)).published == 3
    assert publisher.retract(DAY, ["act-1", "act-2"]) == 2
    assert sorted(state.records) == ["act-0"]
    assert all(w["activity_id"] == "act-0" for w in state.writes.values())
    assert publisher.retract(DAY, ["act-1", "act-2"]) == 0
