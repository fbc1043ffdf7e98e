"""The S3 object store against a real moto server on 127.0.0.1 (HTTP, not an in-process mock)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from asr_assets.core.storage import SUCCESS_FILE, UnsafeKeyError
from asr_assets.resources.object_store import (
    InsufficientSpaceError,
    ObjectNotFoundError,
    StoreUnavailableError,
)
from asr_assets.resources.s3 import S3ObjectStore, is_retryable_s3_error
from tests.support.moto_server import MotoServer, aws_env, moto, s3_client  # noqa: F401

pytestmark = pytest.mark.integration

BUCKET = "asr-store"


@pytest.fixture
def store(aws_env: MotoServer, tmp_path: Path) -> S3ObjectStore:  # noqa: F811
    s3_client(aws_env.endpoint).create_bucket(Bucket=BUCKET)
    return S3ObjectStore(
        bucket=BUCKET,
        prefix="asr/test",
        endpoint_url=aws_env.endpoint,
        cache_dir=str(tmp_path / "cache"),
        min_free_bytes=0,
    )


def _another(store: S3ObjectStore, **changes: Any) -> S3ObjectStore:
    """A separate store instance (own client, own counters), as another process would have."""
    fields = {name: getattr(store, name) for name in ("bucket", "prefix", "endpoint_url")}
    return S3ObjectStore(**{**fields, "cache_dir": store.cache_dir, "min_free_bytes": 0, **changes})


def _cached_blobs(store: S3ObjectStore) -> list[Path]:
    return [p for p in (Path(store.cache_dir) / "objects").rglob("*") if p.is_file()]


def test_round_trip_size_copy_delete_and_missing(store: S3ObjectStore) -> None:
    store.write_bytes("a/b/c.bin", b"xyz")
    assert store.read_bytes("a/b/c.bin") == b"xyz" and store.size("a/b/c.bin") == 3
    assert store.uri("a/b/c.bin") == f"s3://{BUCKET}/asr/test/a/b/c.bin"
    store.copy("a/b/c.bin", "a/d.bin")
    assert store.read_bytes("a/d.bin") == b"xyz"
    store.delete("a/d.bin")
    assert store.size("a/d.bin") is None and not store.exists("a/d.bin")
    with pytest.raises(ObjectNotFoundError):
        store.read_bytes("a/b/missing.bin")
    with pytest.raises(ObjectNotFoundError):
        store.copy("a/b/missing.bin", "a/e.bin")
    store.write_table("t/x.parquet", pa.table({"x": [1, 2]}))
    assert store.read_table("t/x.parquet").column("x").to_pylist() == [1, 2]


def test_listing_pages_through_more_than_a_thousand_objects(
    store: S3ObjectStore,
    aws_env: MotoServer,  # noqa: F811
) -> None:
    keys = [f"asr/test/audio/2026-11-27/{i:05d}.wav" for i in range(1234)]
    aws_env.put_objects(BUCKET, [*keys, "asr/test/other/z.wav", "asr/elsewhere/audio/x.wav"])
    first = store.list_page("audio/")
    assert len(first.objects) == 1000
    assert first.objects[0].key == "audio/2026-11-27/00000.wav"  # relative to the store root
    assert first.next_token == "audio/2026-11-27/00999.wav"
    second = store.list_page("audio/", start_after=first.next_token)
    assert len(second.objects) == 234 and second.next_token is None
    listed = [info.key for info in store.iter_objects("audio/")]
    assert listed == [key.removeprefix("asr/test/") for key in keys]
    small = store.list_page("audio/2026-11-27/", start_after="audio/2026-11-27/01200.wav")
    assert small.objects[0].key == "audio/2026-11-27/01201.wav"
    assert all(o.size == 1 and o.last_modified.tzinfo is not None for o in small.objects)
    assert store.delete_prefix("audio/") == 1234  # batched DeleteObjects
    assert store.list_page("audio/").objects == []


def test_reads_are_cached_by_content_and_revalidated_by_etag(store: S3ObjectStore) -> None:
    store.write_bytes("audio/a.wav", b"same bytes")
    store.write_bytes("audio/b.wav", b"same bytes")
    assert store.read_bytes("audio/a.wav") == b"same bytes"
    assert store.read_bytes("audio/a.wav") == b"same bytes"
    assert store.read_bytes("audio/b.wav") == b"same bytes"
    stats = store.cache_stats()
    assert stats["cache_hits"] == 1 and stats["cache_misses"] == 2
    assert len(_cached_blobs(store)) == 1  # content-addressed: one blob for both keys
    # An overwritten object is never served stale: its ETag changed, the 304 does not come.
    store.write_bytes("audio/a.wav", b"new bytes")
    assert store.read_bytes("audio/a.wav") == b"new bytes"
    assert store.cache_stats()["cache_hits"] == 1
    # Stage tables are read once and overwritten: not cached.
    store.write_bytes("stages/x/manifest.parquet", b"table")
    store.read_bytes("stages/x/manifest.parquet")
    assert len(_cached_blobs(store)) == 2


def test_a_corrupt_cache_blob_is_downloaded_again(store: S3ObjectStore) -> None:
    store.write_bytes("audio/a.wav", b"original")
    store.read_bytes("audio/a.wav")
    (blob,) = _cached_blobs(store)
    blob.write_bytes(b"tampered")
    assert store.read_bytes("audio/a.wav") == b"original"
    assert store.cache_stats()["downloads"] == 2


def test_disk_guard_refuses_a_download_into_the_reserve(
    aws_env: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    s3_client(aws_env.endpoint).create_bucket(Bucket=BUCKET)
    cache = tmp_path / "cache"
    store = S3ObjectStore(
        bucket=BUCKET, endpoint_url=aws_env.endpoint, cache_dir=str(cache), min_free_bytes=10**18
    )
    store.write_bytes("audio/a.wav", b"x" * 1000)
    with pytest.raises(InsufficientSpaceError, match="reserve"):
        store.read_bytes("audio/a.wav")
    assert not _cached_blobs(store) and store.cache_stats()["disk_guard_refusals"] == 1
    store.write_bytes("stages/t.parquet", b"not cached, so no local write to guard")
    assert store.read_bytes("stages/t.parquet").startswith(b"not cached")


@pytest.mark.parametrize(
    "key", ["../escape.wav", "/abs.wav", "a/../../b", "a//b", "a\\b", "a/\x00b", "x" * 1025]
)
def test_unsafe_keys_are_rejected_before_any_request(key: str, tmp_path: Path) -> None:
    # No server at all: a request would fail with StoreUnavailableError, not UnsafeKeyError.
    store = S3ObjectStore(
        bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{_closed_port()}", cache_dir=str(tmp_path)
    )
    for call in (
        lambda: store.read_bytes(key),
        lambda: store.write_bytes(key, b"x"),
        lambda: store.size(key),
        lambda: store.delete(key),
        lambda: store.copy("ok.wav", key),
        lambda: store.list_page("audio/", start_after=key),
    ):
        with pytest.raises(UnsafeKeyError):
            call()
    assert not any(tmp_path.iterdir())


def test_downloads_are_bounded_per_process(store: S3ObjectStore, aws_env: MotoServer) -> None:  # noqa: F811
    bounded = _another(store, max_concurrent_downloads=2)
    keys = [f"audio/{i:02d}.wav" for i in range(16)]
    aws_env.put_objects(BUCKET, [f"asr/test/{key}" for key in keys])
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(bounded.read_bytes, keys)) == [b"1"] * 16
    assert 1 <= bounded.cache_stats()["peak_concurrent_downloads"] <= 2


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self.data


def _inject(store: S3ObjectStore, operation: str, status: int, code: str, times: int) -> list[int]:
    """Answer the next `times` requests of `operation` with an S3 error, before they are sent."""
    calls = [0]
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    def before_send(request: Any, **_: object) -> AWSResponse | None:
        calls[0] += 1
        if calls[0] <= times:
            return AWSResponse(request.url, status, {}, _Body(body))
        return None

    store.client().meta.events.register(f"before-send.s3.{operation}", before_send)
    return calls


def test_throttling_is_retried_by_the_s3_policy(store: S3ObjectStore) -> None:
    store.write_bytes("audio/a.wav", b"data")
    calls = _inject(store, "GetObject", 503, "SlowDown", times=2)
    assert store.read_bytes("audio/a.wav") == b"data"
    assert calls[0] == 3  # two SlowDowns, then the real answer (ASR_RETRY_S3_ATTEMPTS=3)


def test_access_denied_is_not_retried(store: S3ObjectStore) -> None:
    calls = _inject(store, "ListObjectsV2", 403, "AccessDenied", times=5)
    with pytest.raises(StoreUnavailableError, match=r"AccessDenied \(HTTP 403\)"):
        store.list_page("audio/")
    assert calls[0] == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_endpoint_is_store_unavailable(tmp_path: Path, aws_env: MotoServer) -> None:  # noqa: F811
    store = S3ObjectStore(
        bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{_closed_port()}", cache_dir=str(tmp_path)
    )
    with pytest.raises(StoreUnavailableError, match="EndpointConnectionError"):
        store.list_page("audio/")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("ServiceUnavailable", 503), True),
        (_client_error("RequestTimeout", 400), True),
        (_client_error("Whatever", 502), True),
        (_client_error("TooManyRequests", 429), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchKey", 404), False),
        (_client_error("InvalidRange", 416), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (ValueError("bug"), False),
    ],
)
def test_retryable_s3_errors(error: BaseException, retryable: bool) -> None:
    assert is_retryable_s3_error(error) is retryable


def test_a_result_partition_is_invisible_until_its_success_exists(
    store: S3ObjectStore,
    aws_env: MotoServer,  # noqa: F811
) -> None:
    """The base commit protocol on S3, watched by an independent reader while it runs."""
    reader = _another(store)
    prefix = "results/letter_scores/activity_date=2026-11-27"
    seen_before_success: list[object] = []
    lock = threading.Lock()

    def watch(params: dict[str, Any], **_: object) -> None:
        if params.get("Key", "").endswith(f"{prefix}/{SUCCESS_FILE}"):
            with lock:
                listed = [o.key for o in reader.iter_objects(f"{prefix}/")]
                seen_before_success.append((reader.read_committed(prefix), listed))

    store.client().meta.events.register("before-parameter-build.s3.PutObject", watch)

    def commit(run_id: str, rows: list[int]) -> dict[str, str]:
        staged = f"results/_staging/{run_id}/activity_date=2026-11-27/letter_scores.parquet"
        store.write_table(staged, pa.table({"x": rows}))
        assert reader.read_committed(prefix) is None or run_id != "run1"
        return store.commit_partition(
            {"letter_scores": staged}, {"letter_scores": prefix}, {"run_id": run_id}
        )

    keys = commit("run1", [1, 2])
    # Just before _SUCCESS was written the data file was already in place, yet unreadable.
    assert seen_before_success == [(None, [f"{prefix}/part-run1.parquet"])]
    manifest = reader.read_committed(prefix)
    assert manifest == {"run_id": "run1", "files": keys, "generation": 1}
    assert reader.read_table(keys["letter_scores"]).column("x").to_pylist() == [1, 2]
    # A rerun: until the new _SUCCESS lands, readers still get the old partition, whole.
    new_keys = commit("run2", [3])
    before_switch, listed = seen_before_success[1]
    assert before_switch == {"run_id": "run1", "files": keys, "generation": 1}
    assert set(listed) == {
        f"{prefix}/{SUCCESS_FILE}",
        f"{prefix}/part-run1.parquet",
        f"{prefix}/part-run2.parquet",
    }
    assert reader.read_committed(prefix)["run_id"] == "run2"  # type: ignore[index]
    assert [o.key for o in reader.iter_objects(f"{prefix}/")] == [
        f"{prefix}/{SUCCESS_FILE}",
        f"{prefix}/part-run2.parquet",
    ]
    assert reader.read_table(new_keys["letter_scores"]).column("x").to_pylist() == [3]
    assert reader.list_page("results/_staging/").objects == []


def test_conditional_manifest_writes_fence_a_stale_run_on_s3(store: S3ObjectStore) -> None:
    """If-None-Match / If-Match against the real S3 API (moto): a stale run loses."""
    from asr_assets.core.storage import RESULT_TABLES, result_prefix, staging_prefix
    from asr_assets.resources.object_store import CommitConflictError, PreconditionFailedError

    day = "2026-11-27"
    prefixes = {name: result_prefix(name, day) for name in RESULT_TABLES}
    other = _another(store)  # the second run's own process and client

    def commit(target: S3ObjectStore, run_id: str, fence: object) -> dict[str, str]:
        staged = {}
        for name in RESULT_TABLES:
            staged[name] = f"{staging_prefix(run_id, day)}/{name}.parquet"
            target.write_table(staged[name], pa.table({"run": [run_id]}))
        return target.commit_partition(
            staged, prefixes, {"partition": day, "run_id": run_id}, fence=fence
        )

    with pytest.raises(PreconditionFailedError):
        store.write_bytes("x/manifest.json", b"1") or store.write_bytes_if(
            "x/manifest.json", b"2", version=None
        )
    stale = store.commit_fence(day)
    newer = other.commit_fence(day)
    assert stale.version is None and stale.generation == 0
    keys = commit(other, "run-b", newer)
    with pytest.raises(CommitConflictError):
        commit(store, "run-a", stale)
    manifest = store.read_partition_manifest(day)
    assert manifest is not None and manifest["run_id"] == "run-b" and manifest["generation"] == 1
    assert all(store.exists(key) for key in keys.values())
    assert not store.exists(f"{prefixes['errors']}/part-run-a.parquet")
    # The next run fences on run-b's ETag and commits generation 2.
    commit(store, "run-c", store.commit_fence(day))
    assert store.read_partition_manifest(day)["generation"] == 2  # type: ignore[index]
    assert not store.exists(keys["errors"])
