"""The publisher interface, its local JSONL sink and the AppSync (production) publisher."""

from __future__ import annotations

import json
import re
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

import dagster as dg
import httpx
from pydantic import Field

from asr_assets.core.models import ActivityResult
from asr_assets.observability.logging import get_logger, in_current_context
from asr_assets.observability.tracing import span
from asr_assets.reliability.rate_limit import RateLimiter, RateLimitSettings, shared_bucket
from asr_assets.reliability.retry import Dependency, retrying
from asr_assets.resources.object_store import LocalObjectStore

log = get_logger(__name__)


@dataclass
class PublishReport:
    """What one `publish` call did, per activity; `failures` maps activity_id to a reason code."""

    published: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # activity_id -> reason
    retries: int = 0
    # Failures whose last error was transient (throttling, 5xx, transport) after the retries
    # ran out: a later step retry may deliver them; the others (rejections) it will not.
    transient_failures: int = 0

    @property
    def attempted(self) -> int:
        return self.published + self.duplicates + self.failed

    def add(self, other: PublishReport) -> None:
        """Fold in the report of another call for the same partition (publishing in chunks)."""
        self.published += other.published
        self.duplicates += other.duplicates
        self.failed += other.failed
        self.failures.update(other.failures)
        self.retries += other.retries
        self.transient_failures += other.transient_failures

    @property
    def failures_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(self.failures.values()).items()))


class Publisher(dg.ConfigurableResource):
    """Delivers one record per activity; delivering the same idempotency key twice is a no-op."""

    @abstractmethod
    def publish(self, partition_key: str, records: Sequence[ActivityResult]) -> PublishReport: ...

    @abstractmethod
    def destination(self, partition_key: str) -> str: ...

    @abstractmethod
    def retract(self, partition_key: str, activity_ids: Sequence[str]) -> int:
        """Delete what was published for these activities (privacy erasure); returns how many
        records were removed. Retracting something never published is a no-op, not an error."""


class LocalJsonlPublisher(Publisher):
    """One JSONL file per partition in the local store, upserted by activity id."""

    store: LocalObjectStore
    prefix: str = Field(default="published/activity_results")

    def _key(self, partition_key: str) -> str:
        return f"{self.prefix}/activity_date={partition_key}.jsonl"

    def destination(self, partition_key: str) -> str:
        return self.store.uri(self._key(partition_key))

    def publish(self, partition_key: str, records: Sequence[ActivityResult]) -> PublishReport:
        key = self._key(partition_key)
        # Each activity's line as text with its idempotency key: a partition is published in
        # chunks, and parsed dicts of every activity published so far would grow with the day.
        existing: dict[str, tuple[str, str]] = {}
        if self.store.exists(key):
            for line in self.store.read_bytes(key).decode().splitlines():
                if line.strip():
                    row = json.loads(line)
                    existing[str(row["activity_id"])] = (str(row.get("idempotency_key")), line)
        report = PublishReport()
        for record in records:
            previous = existing.get(record.activity_id)
            if previous is not None and previous[0] == record.idempotency_key:
                report.duplicates += 1
                continue
            line = json.dumps(record.model_dump(mode="json"), sort_keys=True)
            existing[record.activity_id] = (record.idempotency_key, line)
            report.published += 1
        if report.published:
            body = "".join(existing[activity][1] + "\n" for activity in sorted(existing))
            self.store.write_bytes(key, body.encode())
        return report

    def retract(self, partition_key: str, activity_ids: Sequence[str]) -> int:
        key = self._key(partition_key)
        if not self.store.exists(key):
            return 0
        doomed = set(activity_ids)
        kept: list[str] = []
        removed = 0
        for line in self.store.read_bytes(key).decode().splitlines():
            if not line.strip():
                continue
            if str(json.loads(line)["activity_id"]) in doomed:
                removed += 1
            else:
                kept.append(line + "\n")
        if removed:
            if kept:
                self.store.write_bytes(key, "".join(kept).encode())
            else:
                self.store.delete(key)
        return removed


# --- AppSync (production) ---------------------------------------------------------------------

#: The mutation every activity is delivered with. The AppSync schema must expose it (see
#: docs/quality.md); its resolver writes the record unless the idempotency key was seen before,
#: in which case it writes nothing and answers DUPLICATE.
PUBLISH_MUTATION = """
mutation PublishActivityResult($input: ActivityResultInput!) {
  publishActivityResult(input: $input) {
    activityId
    idempotencyKey
    status
  }
}
""".strip()

#: AppSync `errorType`s worth retrying: throttling (API, resolver data source) and transient
#: service faults. Anything else (validation, authorization, a failed condition) is permanent.
RETRYABLE_ERROR_TYPES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "LimitExceededException",
        "DynamoDB:ProvisionedThroughputExceededException",
        "DynamoDB:ThrottlingException",
        "Lambda:TooManyRequestsException",
        "ServiceUnavailableException",
        "InternalFailure",
    }
)
#: Erasure: the resolver deletes the activity's record(s) and answers DELETED, or NOT_FOUND
#: when nothing was stored (a repeated erasure). The AppSync schema must expose it too.
RETRACT_MUTATION = """
mutation RetractActivityResult($input: RetractActivityResultInput!) {
  retractActivityResult(input: $input) {
    activityId
    status
  }
}
""".strip()
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_APPSYNC_HOST = re.compile(r"\.appsync-api\.([a-z0-9-]+)\.amazonaws\.com$")


class AppSyncAuthMode(StrEnum):
    API_KEY = "api_key"
    IAM = "iam"


class AppSyncConfigError(ValueError):
    """The publisher's configuration cannot work (no key, no credentials, plain HTTP)."""


class AppSyncError(RuntimeError):
    """One failed delivery attempt, with a short reason code and whether a retry may help."""

    def __init__(self, reason: str, *, retryable: bool, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retryable = retryable
        self.detail = detail


def _retryable(error: BaseException) -> bool:
    # Transport errors include timeouts after the request was sent: retrying is still safe
    # because the idempotency key makes the second write a no-op.
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, AppSyncError) and error.retryable


def mutation_input(record: ActivityResult) -> dict[str, object]:
    """The GraphQL `ActivityResultInput` for one record (AWSJSON fields travel as strings)."""
    data = record.model_dump(mode="json")
    return {
        "activityId": data["activity_id"],
        "tenantId": data["tenant_id"],
        "activityDate": data["activity_date"],
        "nPhrases": data["n_phrases"],
        "nScored": data["n_scored"],
        "nErrors": data["n_errors"],
        "nExpectedLetters": data["n_expected_letters"],
        "nCorrectLetters": data["n_correct_letters"],
        "accuracy": data["accuracy"],
        "modelName": data["model_name"],
        "modelVersion": data["model_version"],
        "modelSha256": data["model_sha256"],
        "runId": data["run_id"],
        "idempotencyKey": data["idempotency_key"],
        "phrases": json.dumps(data["phrases"], sort_keys=True),
    }


@dataclass(frozen=True)
class _Delivery:
    activity_id: str
    status: str  # "published" | "duplicate" | "failed"
    attempts: int
    reason: str | None = None
    transient: bool = False


class AppSyncPublisher(Publisher):
    """Delivers each activity with one GraphQL mutation to AWS AppSync over HTTPS.

    Auth is an API key (`x-api-key`) or IAM (SigV4, service `appsync`, credentials from botocore's
    default chain). Requests run on a bounded thread pool behind a token bucket, and throttling,
    5xx and transport errors are retried with jittered exponential backoff
    (`reliability.retry`, `Dependency.APPSYNC`). Retrying a write is safe because every record
    carries an idempotency key per (activity, model, run): the resolver turns a repeat into a
    no-op that answers DUPLICATE.
    """

    url: str = Field(
        description="GraphQL endpoint, https://<api-id>.appsync-api.<region>.amazonaws.com/graphql"
        " (plain http only for loopback test servers)."
    )
    auth_mode: AppSyncAuthMode = Field(
        default=AppSyncAuthMode.API_KEY, description="api_key (x-api-key header) or iam (SigV4)."
    )
    api_key: str | None = Field(
        default=None,
        description="AppSync API key for auth_mode=api_key; pass dg.EnvVar('ASR_APPSYNC_API_KEY').",
    )
    region: str | None = Field(
        default=None,
        description="Signing region for auth_mode=iam; default: taken from the AppSync host name,"
        " else botocore's configured region.",
    )
    max_concurrency: int = Field(default=8, ge=1, le=64, description="Requests in flight at once.")
    requests_per_s: float = Field(
        default=25.0, gt=0, description="Token-bucket rate, attempts and retries included."
    )
    burst: int = Field(default=10, ge=1, description="Token-bucket capacity.")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=15.0, gt=0)

    def destination(self, partition_key: str) -> str:
        # The endpoint only: never the key, and the partition is in the records themselves.
        return f"{self.url} (publishActivityResult)"

    def publish(self, partition_key: str, records: Sequence[ActivityResult]) -> PublishReport:
        """Deliver every record; failures are counted per activity, never raised mid-batch."""
        self._check_endpoint()
        report = PublishReport()
        if not records:
            return report
        sign = self._signer()
        bucket = shared_bucket(
            Dependency.APPSYNC,
            RateLimitSettings(per_s=self.requests_per_s, burst=float(self.burst)),
        )
        retries: list[int] = []
        timeout = httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        limits = httpx.Limits(max_connections=self.max_concurrency)
        started = time.perf_counter()
        with (
            span(
                "appsync.publish",
                {
                    "asr.partition": partition_key,
                    "asr.activity_count": len(records),
                    "server.address": urlsplit(self.url).hostname,
                },
            ) as publish_span,
            httpx.Client(timeout=timeout, limits=limits) as client,
            ThreadPoolExecutor(
                max_workers=min(self.max_concurrency, len(records)),
                thread_name_prefix="appsync-publish",
            ) as pool,
        ):
            # Workers log for this stage and run: they carry its context.
            deliver = in_current_context(
                lambda record: self._deliver(client, sign, bucket, partition_key, record)
            )
            deliveries = list(pool.map(deliver, records))
            publish_span.set_attribute("asr.failed", sum(d.status == "failed" for d in deliveries))
        for delivery in deliveries:
            retries.append(delivery.attempts - 1)
            if delivery.status == "published":
                report.published += 1
            elif delivery.status == "duplicate":
                report.duplicates += 1
            else:
                report.failed += 1
                report.failures[delivery.activity_id] = delivery.reason or "unknown"
                report.transient_failures += int(delivery.transient)
        report.retries = sum(retries)
        log.info(
            "appsync_publish_finished",
            partition=partition_key,
            published=report.published,
            duplicates=report.duplicates,
            failed=report.failed,
            retries=report.retries,
            failures_by_reason=report.failures_by_reason,
            status="failed" if report.failed else "ok",
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return report

    def retract(self, partition_key: str, activity_ids: Sequence[str]) -> int:
        """One retract mutation per activity, under the same retry policy and rate limit.

        Unlike publish, a failure raises: an erasure that could not reach the consumer must not
        report success. Retrying is safe: a second delete answers NOT_FOUND.
        """
        self._check_endpoint()
        if not activity_ids:
            return 0
        sign = self._signer()
        bucket = shared_bucket(
            Dependency.APPSYNC,
            RateLimitSettings(per_s=self.requests_per_s, burst=float(self.burst)),
        )
        timeout = httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        removed = 0
        with (
            span(
                "appsync.retract",
                {"asr.partition": partition_key, "asr.activity_count": len(activity_ids)},
            ),
            httpx.Client(timeout=timeout) as client,
        ):
            for activity_id in activity_ids:
                body = json.dumps(
                    {
                        "query": RETRACT_MUTATION,
                        "operationName": "RetractActivityResult",
                        "variables": {
                            "input": {"activityId": activity_id, "activityDate": partition_key}
                        },
                    },
                    separators=(",", ":"),
                ).encode()
                for attempt in retrying(Dependency.APPSYNC, _retryable):
                    with attempt:
                        bucket.acquire()
                        status = self._send(client, sign, body, field="retractActivityResult")
                removed += int(status == "DELETED")
        log.info("appsync_retract_finished", partition=partition_key, removed=removed, status="ok")
        return removed

    # -- one activity ------------------------------------------------------------------------

    def _deliver(
        self,
        client: httpx.Client,
        sign: Callable[[bytes], dict[str, str]],
        bucket: RateLimiter,
        partition_key: str,
        record: ActivityResult,
    ) -> _Delivery:
        body = json.dumps(
            {
                "query": PUBLISH_MUTATION,
                "operationName": "PublishActivityResult",
                "variables": {"input": mutation_input(record)},
            },
            separators=(",", ":"),
        ).encode()
        attempts = 0
        started = time.perf_counter()
        policy = retrying(Dependency.APPSYNC, _retryable)
        try:
            for attempt in policy:
                with attempt:
                    attempts += 1
                    bucket.acquire()
                    status = self._send(client, sign, body)
        except (AppSyncError, httpx.TransportError) as exc:
            reason = exc.reason if isinstance(exc, AppSyncError) else _transport_reason(exc)
            log.warning(
                "activity_publish_failed",
                partition=partition_key,
                activity_id=record.activity_id,
                idempotency_key=record.idempotency_key,
                reason=reason,
                attempts=attempts,
                detail=(exc.detail if isinstance(exc, AppSyncError) else str(exc))[:300],
            )
            return _Delivery(record.activity_id, "failed", attempts, reason, _retryable(exc))
        outcome = "duplicate" if status == "DUPLICATE" else "published"
        log.info(
            "activity_published",
            partition=partition_key,
            activity_id=record.activity_id,
            idempotency_key=record.idempotency_key,
            status=outcome,
            attempts=attempts,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return _Delivery(record.activity_id, outcome, attempts)

    def _send(
        self,
        client: httpx.Client,
        sign: Callable[[bytes], dict[str, str]],
        body: bytes,
        field: str = "publishActivityResult",
    ) -> str:
        """One attempt: the mutation's `status`, or an AppSyncError saying whether to retry."""
        response = client.post(self.url, content=body, headers=sign(body))
        if response.status_code == 429:
            raise AppSyncError("throttled", retryable=True, detail="HTTP 429")
        if response.status_code >= 500:
            raise AppSyncError(f"http_{response.status_code}", retryable=True)
        if response.status_code >= 400:
            raise AppSyncError(
                f"http_{response.status_code}", retryable=False, detail=_error_types(response)
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise AppSyncError("bad_response", retryable=False, detail="body is not JSON") from exc
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if errors:
            types = [_error_type(error) for error in errors]
            retryable = all(t in RETRYABLE_ERROR_TYPES for t in types)
            first = types[0] or "GraphQLError"
            reason = "throttled" if "Throttl" in first or "TooMany" in first else f"graphql_{first}"
            message = str(errors[0].get("message", "")) if isinstance(errors[0], dict) else ""
            raise AppSyncError(reason, retryable=retryable, detail=message)
        result = (payload.get("data") or {}).get(field) or {}
        status = result.get("status")
        if status not in ("CREATED", "DUPLICATE", "DELETED", "NOT_FOUND"):
            raise AppSyncError("bad_response", retryable=False, detail=f"status {status!r}")
        return str(status)

    # -- configuration ----------------------------------------------------------------------

    def _check_endpoint(self) -> None:
        parsed = urlsplit(self.url)
        if parsed.scheme == "https" or (
            parsed.scheme == "http" and parsed.hostname in _LOOPBACK_HOSTS
        ):
            return
        raise AppSyncConfigError("the AppSync url must use https (http only for loopback)")

    def _signer(self) -> Callable[[bytes], dict[str, str]]:
        base = {"content-type": "application/json", "accept": "application/json"}
        if self.auth_mode is AppSyncAuthMode.API_KEY:
            if not self.api_key:
                raise AppSyncConfigError("auth_mode=api_key needs api_key (ASR_APPSYNC_API_KEY)")
            headers = {**base, "x-api-key": self.api_key}
            return lambda _body: headers
        return self._sigv4_signer(base)

    def _sigv4_signer(self, base: dict[str, str]) -> Callable[[bytes], dict[str, str]]:
        # botocore is imported here, not at module import: the code location stays cheap, and
        # the default credential chain (env, profile, container, instance metadata) is consulted
        # only when something is actually published.
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import get_session

        session = get_session()
        credentials = session.get_credentials()
        if credentials is None:
            raise AppSyncConfigError("auth_mode=iam but the default AWS credential chain is empty")
        region = self.region or _region_from_url(self.url) or session.get_config_variable("region")
        if not region:
            raise AppSyncConfigError(
                "auth_mode=iam needs a region (field, host name or AWS config)"
            )
        url = self.url

        def sign(body: bytes) -> dict[str, str]:
            # Signed per attempt: SigV4 signatures carry a timestamp, and refreshable
            # credentials may have rotated since the previous attempt.
            request = AWSRequest(method="POST", url=url, data=body, headers=dict(base))
            SigV4Auth(credentials.get_frozen_credentials(), "appsync", region).add_auth(request)
            return dict(request.headers.items())

        return sign


def _region_from_url(url: str) -> str | None:
    match = _APPSYNC_HOST.search(urlsplit(url).hostname or "")
    return match.group(1) if match else None


def _error_type(error: object) -> str:
    """AppSync puts `errorType` on the error; other servers put it under `extensions`."""
    if not isinstance(error, dict):
        return ""
    extensions = error.get("extensions")
    nested = extensions.get("errorType") if isinstance(extensions, dict) else None
    return str(error.get("errorType") or nested or "")


def _error_types(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return ""
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return ",".join(_error_type(e) for e in errors or [])


def _transport_reason(error: httpx.TransportError) -> str:
    name = type(error).__name__
    return "timeout" if isinstance(error, httpx.TimeoutException) else f"transport_{name}"
