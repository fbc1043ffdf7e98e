"""Our retry policy and rate limit, run inside botocore's own request loop.

Why: some AWS calls are made by libraries, not by us. pyathena starts a query, polls it (one
GetQueryExecution per poll interval) and downloads the result file: about six requests per query.
Retrying the whole query when one poll is throttled re-runs (and re-bills) the query and, at a
20% fault rate, succeeds on only a quarter of attempts. So each of those requests is retried on its
own, by botocore's request loop (which re-signs every attempt), with *our* settings: botocore's
retry config stays at one attempt, and the handlers below, registered on the boto3 session the
library uses, decide whether and how long to wait, using `reliability.retry`'s settings,
full-jitter backoff, logging and retry counters, and take a token from the dependency's bucket
before every attempt.

Each handler receives botocore's event keyword arguments; nothing here imports botocore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asr_assets.observability.logging import get_logger
from asr_assets.reliability.rate_limit import RateLimiter, shared_bucket
from asr_assets.reliability.retry import (
    Dependency,
    RetrySettings,
    backoff_delay,
    record_retry,
    settings_for,
)

log = get_logger(__name__)

#: Set on an exception (or read from `ResponseMetadata.RetryAttempts`) once our per-request policy
#: has given up on it, so an outer layer does not retry what was already retried.
EXHAUSTED_MARKER = "asr_per_request_retries_exhausted"
_STARTED = "asr_retry_started_at"


class _ResponseError(Exception):
    """A botocore parsed error response, shaped like `ClientError` for the retry predicates."""

    def __init__(self, parsed: dict[str, Any]) -> None:
        super().__init__(str(parsed.get("Error", {}).get("Code")))
        self.response = parsed


class RetryHook:
    """A `needs-retry` handler: seconds to sleep before the next attempt, or None to stop."""

    def __init__(
        self,
        dependency: Dependency,
        retry_if: Callable[[BaseException], bool],
        settings: RetrySettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self.retry_if = retry_if
        self._settings = settings
        self._clock = clock

    @property
    def settings(self) -> RetrySettings:
        """Fixed settings, else the environment's now (the hook outlives any one run)."""
        return self._settings or settings_for(self.dependency)

    def __call__(
        self,
        attempts: int = 1,
        response: tuple[Any, dict[str, Any]] | None = None,
        caught_exception: BaseException | None = None,
        request_dict: dict[str, Any] | None = None,
        operation: Any = None,
        **_: Any,
    ) -> float | None:
        error = caught_exception
        if error is None and response is not None:
            http_response, parsed = response
            if getattr(http_response, "status_code", 200) < 300:
                return None
            error = _ResponseError(parsed)
        if error is None or not self.retry_if(error):
            return None
        context = (request_dict or {}).setdefault("context", {})
        started = context.setdefault(_STARTED, self._clock())
        settings = self.settings
        if attempts >= settings.attempts or self._clock() - started >= settings.deadline_s:
            if caught_exception is not None:
                setattr(caught_exception, EXHAUSTED_MARKER, True)
            return None
        delay = backoff_delay(settings, attempts)
        record_retry(self.dependency)
        log.warning(
            "retrying",
            dependency=self.dependency.value,
            operation=getattr(operation, "name", None),
            attempt=attempts,
            error=type(error).__name__ if caught_exception is not None else str(error),
            sleep_s=round(delay, 3),
            status="retrying",
        )
        return delay


class RateLimitHook:
    """A `before-send` handler: waits for a token, then lets the request go (returns None)."""

    def __init__(self, dependency: Dependency, bucket: RateLimiter | None = None) -> None:
        self.dependency = dependency
        self._bucket = bucket

    def __call__(self, **_: Any) -> None:
        (self._bucket or shared_bucket(self.dependency)).acquire()


def install_request_policy(
    events: Any,
    dependency: Dependency,
    retry_if: Callable[[BaseException], bool],
    *,
    settings: RetrySettings | None = None,
) -> None:
    """Register our retry and rate-limit handlers on a botocore event emitter.

    Register on a boto3 session's `events` before its clients are built (every client made
    from it, whichever library makes it, inherits them) or on one client's `meta.events`.
    """
    events.register("needs-retry", RetryHook(dependency, retry_if, settings))
    events.register("before-send", RateLimitHook(dependency))


def retries_exhausted(exc: BaseException) -> bool:
    """True when our per-request policy already retried this error as often as it allows."""
    if getattr(exc, EXHAUSTED_MARKER, False):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        attempts = response.get("ResponseMetadata", {}).get("RetryAttempts")
        return isinstance(attempts, int) and attempts > 0
    return False
