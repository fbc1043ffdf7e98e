"""Token buckets: bound the request rate to each dependency from one process.

Retries are only half of being a good client: during an outage many workers retrying at once can
keep a recovering service down. Every request attempt (first tries and retries alike) to S3,
Athena and Triton takes a token from that dependency's bucket, shared by every thread and resource
instance of the process (`shared_bucket`); AppSync's publisher sizes its bucket from its own
resource fields (`ASR_APPSYNC_REQUESTS_PER_S`). Knobs are environment variables read when a bucket
is first built, never at import: `ASR_RATE_<DEPENDENCY>_PER_S` (0 switches the limit off) and
`ASR_RATE_<DEPENDENCY>_BURST`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from asr_assets.reliability.retry import Dependency


class TokenBucket:
    """`rate_per_s` tokens per second, bursts up to `capacity`; `acquire` blocks until granted."""

    def __init__(
        self,
        rate_per_s: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.capacity = capacity if capacity is not None else max(1.0, rate_per_s)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self, tokens: float = 1.0) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def acquire(self, tokens: float = 1.0, timeout_s: float | None = None) -> bool:
        """Wait for `tokens`; False if `timeout_s` passes first."""
        if tokens > self.capacity:
            raise ValueError("cannot acquire more tokens than the bucket holds")
        deadline = None if timeout_s is None else self._clock() + timeout_s
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= tokens:
                    self._tokens -= tokens
                    return True
                wait = (tokens - self._tokens) / self.rate
            if deadline is not None and self._clock() + wait > deadline:
                return False
            self._sleep(wait)


@dataclass(frozen=True)
class RateLimitSettings:
    """Sustained requests per second (0: unlimited) and the burst a bucket allows."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_s < 0 or self.burst < 1:
            raise ValueError("per_s must be >= 0 and burst >= 1")


#: Defaults sized below the services' documented quotas, per run process: S3 serves 3,500 PUT and
#: 5,500 GET per second per prefix; Athena's StartQueryExecution quota is 20/s (its polls and the
#: result download share the bucket); Triton has no quota, so its bucket only stops a runaway
#: loop from flooding a shared inference server.
RATE_DEFAULTS: Mapping[Dependency, RateLimitSettings] = {
    Dependency.S3: RateLimitSettings(per_s=1000.0, burst=200.0),
    Dependency.ATHENA: RateLimitSettings(per_s=20.0, burst=40.0),
    Dependency.TRITON: RateLimitSettings(per_s=200.0, burst=50.0),
    Dependency.APPSYNC: RateLimitSettings(per_s=25.0, burst=10.0),
}


def rate_settings_for(
    dependency: Dependency, environ: Mapping[str, str] | None = None
) -> RateLimitSettings:
    """Defaults overridden by `ASR_RATE_<DEP>_PER_S` and `ASR_RATE_<DEP>_BURST`."""
    env = os.environ if environ is None else environ
    base = RATE_DEFAULTS[dependency]
    prefix = f"ASR_RATE_{dependency.value.upper()}_"
    overrides: dict[str, float] = {}
    for knob in ("per_s", "burst"):
        raw = env.get(prefix + knob.upper())
        if raw is not None and raw.strip():
            overrides[knob] = float(raw)
    return replace(base, **overrides)


class _Unlimited:
    """The bucket of a dependency whose limit is switched off (`..._PER_S=0`)."""

    def acquire(self, tokens: float = 1.0, timeout_s: float | None = None) -> bool:
        return True

    def try_acquire(self, tokens: float = 1.0) -> bool:
        return True


RateLimiter = TokenBucket | _Unlimited

_shared: dict[Dependency, tuple[RateLimitSettings, RateLimiter]] = {}
_shared_lock = threading.Lock()


def shared_bucket(dependency: Dependency, settings: RateLimitSettings | None = None) -> RateLimiter:
    """This process's bucket for `dependency`; rebuilt only when its settings change."""
    chosen = settings or rate_settings_for(dependency)
    with _shared_lock:
        current = _shared.get(dependency)
        if current is not None and current[0] == chosen:
            return current[1]
        bucket: RateLimiter = (
            TokenBucket(chosen.per_s, chosen.burst) if chosen.per_s > 0 else _Unlimited()
        )
        _shared[dependency] = (chosen, bucket)
        return bucket


def reset_shared_buckets() -> None:
    """Forget every shared bucket (tests; a process whose settings changed)."""
    with _shared_lock:
        _shared.clear()
