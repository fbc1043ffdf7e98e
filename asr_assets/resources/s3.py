"""The S3 object store (aws environment): boto3 behind the `ObjectStore` interface.

What this adds over a thin boto3 wrapper, and why:
- One retry layer. botocore's own retries are switched off and every request goes through the
  S3 policy in `reliability/retry.py`, with `is_retryable_s3_error` deciding what is transient
  (throttling, `SlowDown`, 5xx, dropped connections). Stacked retry layers multiply each other's
  attempts during an outage.
- A local content-addressed read cache. Runs read the same objects several times (a clip in
  `transcripts` and again in `alignments`), so reads are served from `cache_dir` after the first
  download. Blobs are stored by the sha256 of their bytes (identical recordings share one file)
  and a small ref per S3 key remembers which blob and which ETag it was; a cached read is one
  conditional GET (`If-None-Match`) that answers 304 without a body, so an overwritten object is
  never served stale.
- A free-disk guard: a download that would leave less than `min_free_bytes` on the cache's disk
  is refused with `InsufficientSpaceError` before a byte is written, like the local store's writes.
- Bounded download concurrency per store instance, i.e. per run process (a semaphore), whatever
  the number of threads asking.
- Keys are validated (`core/storage.validate_key`) before they reach S3 or a local path.
- A rate limit: every request attempt takes a token from the process's S3 bucket
  (`reliability/rate_limit.py`, `ASR_RATE_S3_PER_S` / `ASR_RATE_S3_BURST`), so a retry storm
  after an outage cannot exceed what the prefix can take.

Credentials are never configured here: boto3's default chain (environment, profile, IRSA / instance
role) supplies them, so nothing secret lives in config, metadata or logs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
from pydantic import Field, PrivateAttr, field_validator

from asr_assets.core.storage import validate_key
from asr_assets.observability.logging import get_logger
from asr_assets.observability.otel_metrics import dependency_call
from asr_assets.observability.tracing import span
from asr_assets.reliability.rate_limit import shared_bucket
from asr_assets.reliability.retry import Dependency, retrying
from asr_assets.resources.object_store import (
    InsufficientSpaceError,
    ListPage,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    PreconditionFailedError,
    StoreUnavailableError,
    write_file_atomic,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = get_logger(__name__)

T = TypeVar("T")

# Error codes AWS documents as transient for S3 and the other services we call.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DELETE_BATCH = 1000  # DeleteObjects limit
SSE_MODES = ("aws:kms", "AES256", "none")


_SESSIONS: dict[str | None, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def shared_session(region_name: str | None) -> Any:
    """The per-process boto3 session for a region (created on first use).

    Resources are rebuilt for every run and every sensor tick; a fresh boto3 session parses the
    service models again (~0.15 s a client), a shared one does not.
    """
    import boto3

    with _SESSIONS_LOCK:
        session = _SESSIONS.get(region_name)
        if session is None:
            session = _SESSIONS[region_name] = boto3.session.Session(region_name=region_name)
        return session


def aws_client(service: str, region_name: str | None, **options: Any) -> Any:
    """A client from the shared session; sessions are not thread-safe, clients are."""
    session = shared_session(region_name)
    with _SESSIONS_LOCK:
        return session.client(service, **options)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore `ClientError`, else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def is_transport_error(exc: BaseException) -> bool:
    """A connection that failed, timed out or broke mid-body: worth another attempt."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    return isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError)


def is_retryable_s3_error(exc: BaseException) -> bool:
    """Throttling, 5xx and transport failures are transient; 403, 404 and bad requests are not."""
    if is_transport_error(exc):
        return True
    status = http_status(exc)
    return error_code(exc) in RETRYABLE_ERROR_CODES or status == 429 or (status or 0) >= 500


@dataclass(frozen=True)
class _CacheRef:
    """Which blob an S3 key was, and as of which ETag."""

    etag: str
    sha256: str
    size: int


class S3ObjectStore(ObjectStore):
    """Keys live under `s3://{bucket}/{prefix}/`; the store's layout is the local store's."""

    bucket: str = Field(description="Bucket that holds the store (ASR_S3_BUCKET).")
    prefix: str = Field(
        default="", description="Root prefix inside the bucket, without slashes at the ends."
    )
    region_name: str | None = Field(
        default=None, description="AWS region; None uses boto3's default chain."
    )
    endpoint_url: str | None = Field(
        default=None, description="Endpoint override (VPC endpoint, moto); None for AWS."
    )
    addressing_style: str = Field(
        default="auto", description="botocore S3 addressing style: auto, path or virtual."
    )
    cache_dir: str = Field(description="Local directory of the content-addressed read cache.")
    min_free_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=0,
        description="Refuse downloads that would leave less free disk under cache_dir.",
    )
    max_concurrent_downloads: int = Field(
        default=8, ge=1, le=256, description="GETs in flight at once, per store instance."
    )
    uncached_prefixes: list[str] = Field(
        default=["stages/", "results/"],
        description="Keys read once per run and then overwritten: never worth caching.",
    )
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=20.0, gt=0)
    server_side_encryption: str = Field(
        default="aws:kms",
        description="SSE on every PUT and COPY this store makes (children's audio and results):"
        " aws:kms, AES256, or none to leave it to the bucket default (ASR_S3_SSE).",
    )
    kms_key_id: str | None = Field(
        default=None,
        description="KMS key id or ARN for aws:kms (ASR_S3_KMS_KEY_ID); None: the AWS managed key.",
    )

    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _s3_client: Any = PrivateAttr(default=None)
    _download_slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)
    _stats_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _stats: Counter[str] = PrivateAttr(default_factory=Counter)
    _in_flight: int = PrivateAttr(default=0)

    # -- plumbing -------------------------------------------------------------------------

    def client(self) -> BaseClient:
        """The boto3 S3 client, built on first use (never at import or config time)."""
        with self._client_lock:
            if self._s3_client is None:
                from botocore.config import Config

                self._s3_client = aws_client(
                    "s3",
                    self.region_name,
                    endpoint_url=self.endpoint_url,
                    config=Config(
                        connect_timeout=self.connect_timeout_s,
                        read_timeout=self.read_timeout_s,
                        # The retry policy below is the only retry layer.
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        max_pool_connections=max(10, 2 * self.max_concurrent_downloads),
                        s3={"addressing_style": self.addressing_style},
                    ),
                )
                self._download_slots = threading.BoundedSemaphore(self.max_concurrent_downloads)
            return self._s3_client

    @property
    def _root(self) -> str:
        prefix = self.prefix.strip("/")
        return f"{validate_key(prefix)}/" if prefix else ""

    def _full_key(self, key: str) -> str:
        return self._root + validate_key(key)

    def _full_prefix(self, prefix: str) -> str:
        """Listing prefixes may end in '/' (a 'directory') or be empty (the whole store)."""
        stripped = prefix.rstrip("/")
        if stripped:
            validate_key(stripped)
        return self._root + prefix

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._stats[name] += amount

    def trace_attributes(self) -> dict[str, object]:
        return {"aws.s3.bucket": self.bucket, "asr.store": "s3", "asr.store.prefix": self.prefix}

    def cache_stats(self) -> dict[str, int]:
        """Counters since this resource was built: hits, misses, bytes, peak concurrency."""
        with self._stats_lock:
            return dict(self._stats)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Put the run's transfer and cache figures into its event log (and our log schema)."""
        stats = self.cache_stats()
        if not stats:
            return
        log.info("s3_store_stats", bucket=self.bucket, status="ok", **stats)
        if context.log is not None:
            context.log.info(
                f"S3 store {self.bucket}: {stats.get('downloads', 0)} downloads "
                f"({stats.get('bytes_downloaded', 0)} bytes), {stats.get('cache_hits', 0)} "
                f"cache hits, {stats.get('cache_misses', 0)} cache misses, peak "
                f"{stats.get('peak_concurrent_downloads', 0)} concurrent downloads"
            )

    def _call(self, operation: str, request: Callable[[], T], key: str | None = None) -> T:
        """Run one S3 request under the S3 retry policy and translate what is left.

        A missing key becomes `ObjectNotFoundError`; anything else that survives the retries
        becomes `StoreUnavailableError`, whose message names the operation and AWS error code
        only (never credentials, never object contents).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = shared_bucket(Dependency.S3)

        def attempt() -> T:
            bucket.acquire()  # per attempt: retries count against the rate too
            with dependency_call("s3", operation):
                return request()

        try:
            return retrying(Dependency.S3, is_retryable_s3_error)(attempt)
        except ClientError as exc:
            code = error_code(exc)
            if code in _NOT_FOUND_CODES or (http_status(exc) == 404 and code != "NoSuchBucket"):
                raise ObjectNotFoundError(key or operation) from exc
            log.warning(
                "s3_request_failed",
                operation=operation,
                bucket=self.bucket,
                error=error_code(exc),
                status=http_status(exc),
            )
            raise StoreUnavailableError(
                f"S3 {operation} on bucket {self.bucket!r} failed: "
                f"{error_code(exc)} (HTTP {http_status(exc)})"
            ) from exc
        except BotoCoreError as exc:
            log.warning(
                "s3_request_failed",
                operation=operation,
                bucket=self.bucket,
                error=type(exc).__name__,
            )
            raise StoreUnavailableError(
                f"S3 {operation} on bucket {self.bucket!r} failed: {type(exc).__name__}"
            ) from exc

    @contextmanager
    def _download_slot(self) -> Iterator[None]:
        self.client()  # creates the semaphore with the client
        assert self._download_slots is not None
        with self._download_slots:
            with self._stats_lock:
                self._in_flight += 1
                self._stats["peak_concurrent_downloads"] = max(
                    self._stats["peak_concurrent_downloads"], self._in_flight
                )
            try:
                yield
            finally:
                with self._stats_lock:
                    self._in_flight -= 1

    # -- the local content-addressed cache ---------------------------------------------------

    def _cache_root(self) -> Path:
        return Path(self.cache_dir).resolve()

    def _ref_path(self, full_key: str) -> Path:
        digest = hashlib.sha256(f"s3://{self.bucket}/{full_key}".encode()).hexdigest()
        return self._cache_root() / "refs" / digest[:2] / f"{digest}.json"

    def _blob_path(self, sha256: str) -> Path:
        return self._cache_root() / "objects" / sha256[:2] / sha256

    def _cacheable(self, key: str) -> bool:
        return not any(key.startswith(prefix) for prefix in self.uncached_prefixes)

    def _load_ref(self, full_key: str) -> _CacheRef | None:
        path = self._ref_path(full_key)
        try:
            payload = json.loads(path.read_text())
            ref = _CacheRef(str(payload["etag"]), str(payload["sha256"]), int(payload["size"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("s3_cache_ref_unreadable", error=type(exc).__name__)
            path.unlink(missing_ok=True)
            return None
        return ref if self._blob_path(ref.sha256).is_file() else None

    def _read_blob(self, ref: _CacheRef) -> bytes | None:
        """The cached bytes, or None when the blob is gone or corrupt (then re-download)."""
        try:
            data = self._blob_path(ref.sha256).read_bytes()
        except OSError as exc:
            log.warning(
                "s3_cache_blob_unreadable", sha256=ref.sha256[:16], error=type(exc).__name__
            )
            return None
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            log.warning("s3_cache_blob_corrupt", sha256=ref.sha256[:16])
            self._blob_path(ref.sha256).unlink(missing_ok=True)
            return None
        return data

    def _guard_disk(self, incoming: int) -> None:
        root = self._cache_root()
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if free - incoming < self.min_free_bytes:
            self._count("disk_guard_refusals")
            raise InsufficientSpaceError(
                f"caching {incoming} bytes would leave {free - incoming} bytes free under the "
                f"S3 cache (reserve {self.min_free_bytes})"
            )

    def _store_in_cache(self, full_key: str, data: bytes, etag: str) -> None:
        sha = hashlib.sha256(data).hexdigest()
        blob = self._blob_path(sha)
        if not blob.is_file():  # content-addressed: identical bytes are stored once
            write_file_atomic(blob, data)
        ref = {"etag": etag, "sha256": sha, "size": len(data)}
        write_file_atomic(self._ref_path(full_key), json.dumps(ref).encode())

    # -- ObjectStore ---------------------------------------------------------------------

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def read_bytes(self, key: str) -> bytes:
        full_key = self._full_key(key)
        cacheable = self._cacheable(key)
        ref = self._load_ref(full_key) if cacheable else None

        def get() -> tuple[bytes, str] | None:
            """The body and ETag, or None when the cached ETag is still current (304)."""
            from botocore.exceptions import ClientError

            arguments: dict[str, str] = {"Bucket": self.bucket, "Key": full_key}
            if ref is not None:
                arguments["IfNoneMatch"] = ref.etag
            with self._download_slot():
                try:
                    response = self.client().get_object(**arguments)
                except ClientError as exc:
                    if http_status(exc) == 304:
                        return None
                    raise
                body = response["Body"]
                try:
                    if cacheable:
                        # Before reading the body: a refused download writes nothing.
                        self._guard_disk(int(response.get("ContentLength") or 0))
                    data = body.read()
                finally:
                    body.close()
            return data, str(response.get("ETag", ""))

        fetched = self._call("GetObject", get, key)
        if fetched is None:
            assert ref is not None
            cached = self._read_blob(ref)
            if cached is not None:
                self._count("cache_hits")
                return cached
            self._ref_path(full_key).unlink(missing_ok=True)
            return self.read_bytes(key)  # the blob vanished: fetch unconditionally
        data, etag = fetched
        self._count("downloads")
        self._count("bytes_downloaded", len(data))
        if cacheable:
            self._count("cache_misses")
            self._store_in_cache(full_key, data, etag)
        return data

    @field_validator("server_side_encryption")
    @classmethod
    def _known_sse(cls, value: str) -> str:
        if value not in SSE_MODES:
            raise ValueError(f"server_side_encryption must be one of {', '.join(SSE_MODES)}")
        return value

    def encryption_arguments(self) -> dict[str, str]:
        """SSE request parameters for PutObject and CopyObject (a copy does not inherit SSE)."""
        if self.server_side_encryption == "none":
            return {}
        arguments = {"ServerSideEncryption": self.server_side_encryption}
        if self.server_side_encryption == "aws:kms" and self.kms_key_id:
            arguments["SSEKMSKeyId"] = self.kms_key_id
        return arguments

    def write_bytes(self, key: str, data: bytes) -> None:
        full_key = self._full_key(key)
        sse = self.encryption_arguments()
        self._call(
            "PutObject",
            lambda: self.client().put_object(Bucket=self.bucket, Key=full_key, Body=data, **sse),
            key,
        )

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """One uncached GET: the body and its ETag (the version a conditional PUT names)."""
        full_key = self._full_key(key)

        def get() -> tuple[bytes, str]:
            response = self.client().get_object(Bucket=self.bucket, Key=full_key)
            body = response["Body"]
            try:
                return body.read(), str(response.get("ETag", ""))
            finally:
                body.close()

        try:
            return self._call("GetObject", get, key)
        except ObjectNotFoundError:
            return None

    def write_bytes_if(self, key: str, data: bytes, *, version: str | None) -> None:
        """PutObject with `If-Match: <etag>`, or `If-None-Match: *` to create only."""
        from botocore.exceptions import ClientError

        full_key = self._full_key(key)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}

        def put() -> bool:
            try:
                self.client().put_object(
                    Bucket=self.bucket,
                    Key=full_key,
                    Body=data,
                    **condition,
                    **self.encryption_arguments(),
                )
            except ClientError as exc:
                # 412: the object moved; 409: a concurrent conditional write won the race.
                if http_status(exc) in (409, 412) or error_code(exc) in (
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                ):
                    return False
                raise
            return True

        if not self._call("PutObject", put, key):
            raise PreconditionFailedError(f"{key} is no longer at version {version}")

    def forget_cached(self, key: str) -> None:
        """Remove the local read-cache copy of `key` (its ref and its blob)."""
        full_key = self._full_key(key)
        ref = self._load_ref(full_key)
        self._ref_path(full_key).unlink(missing_ok=True)
        if ref is not None:
            self._blob_path(ref.sha256).unlink(missing_ok=True)

    def prune_local_cache(self, *, max_bytes: int, ttl_s: float, now: float) -> int:
        """Enforce the local read cache's TTL and size cap; oldest blobs go first.

        Returns the number of blobs removed. Refs whose blob is gone are ignored on read
        (`_load_ref`), so removing a blob alone is safe.
        """
        root = self._cache_root() / "objects"
        if not root.is_dir():
            return 0
        blobs = sorted(
            (
                (path.stat().st_mtime, path.stat().st_size, path)
                for path in root.rglob("*")
                if path.is_file()
            ),
            key=lambda item: item[0],
        )
        total = sum(size for _, size, _ in blobs)
        removed = 0
        for mtime, size, path in blobs:
            if now - mtime <= ttl_s and total <= max_bytes:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            log.info("s3_cache_pruned", removed=removed, remaining_bytes=total, status="ok")
        return removed

    def size(self, key: str) -> int | None:
        full_key = self._full_key(key)
        try:
            head = self._call(
                "HeadObject",
                lambda: self.client().head_object(Bucket=self.bucket, Key=full_key),
                key,
            )
        except ObjectNotFoundError:
            return None
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        self._call(
            "DeleteObject",
            lambda: self.client().delete_object(Bucket=self.bucket, Key=full_key),
            key,
        )

    def delete_prefix(self, prefix: str) -> int:
        """Batched: one DeleteObjects request per 1,000 keys instead of one request per key."""
        keys = [self._full_key(info.key) for info in self.iter_objects(prefix)]
        with span("s3.delete_prefix", {**self.trace_attributes(), "asr.key_count": len(keys)}):
            self._delete_keys(keys)
        return len(keys)

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            response = self._call(
                "DeleteObjects",
                lambda batch=batch: self.client().delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                ),
            )
            errors = response.get("Errors") or []
            if errors:
                raise StoreUnavailableError(
                    f"S3 DeleteObjects left {len(errors)} keys: "
                    + ", ".join(sorted({str(e.get("Code")) for e in errors}))
                )

    def copy(self, source_key: str, target_key: str) -> None:
        source = self._full_key(source_key)
        target = self._full_key(target_key)
        self._call(
            "CopyObject",
            lambda: self.client().copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                **self.encryption_arguments(),
            ),
            source_key,
        )

    def list_page(
        self, prefix: str, *, start_after: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        """One ListObjectsV2 request: S3 returns keys in the same lexicographic order."""
        arguments: dict[str, object] = {
            "Bucket": self.bucket,
            "Prefix": self._full_prefix(prefix),
            "MaxKeys": max(1, min(max_keys, 1000)),
        }
        if start_after is not None:
            arguments["StartAfter"] = self._full_key(start_after)
        response = self._call("ListObjectsV2", lambda: self.client().list_objects_v2(**arguments))
        root = self._root
        objects = [
            ObjectInfo(
                key=str(item["Key"])[len(root) :],
                size=int(item["Size"]),
                last_modified=item["LastModified"].astimezone(UTC),
            )
            for item in response.get("Contents", [])
        ]
        truncated = bool(response.get("IsTruncated")) and bool(objects)
        return ListPage(objects, objects[-1].key if truncated else None)
