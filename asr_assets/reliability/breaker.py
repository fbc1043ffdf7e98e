"""Circuit breakers (pybreaker) for dependencies that can disappear, such as the Triton server.

A breaker counts consecutive failures of calls made through it; at the threshold it opens, and
calls are refused at once (no timeouts piling up against a dead server) until a cool-down has
passed. Then it half-opens: the next call is a trial, whose success closes the breaker and whose
failure opens it for another cool-down. A caller can also trip it directly with a reason, which is
what a failed readiness probe does.

Breakers are shared per process and per target (`shared_breaker`), so the engine of a run and the
resource's availability check (asked by sensors) see the same state. The state lives in memory:
each process (a run worker, the sensor daemon) learns about an outage on its own, by failing or
by probing, which is what a breaker is for.

Which exceptions mean "the dependency is unhealthy" is the caller's knowledge; exceptions listed in
`excluded` (a refused request, say) pass through without counting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import pybreaker

from asr_assets.observability.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 3
    cool_down_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cool_down_s < 0:
            raise ValueError("cool_down_s must not be negative")


class CircuitOpenError(RuntimeError):
    """A call was refused without being attempted because the breaker is open."""

    def __init__(self, name: str, reason: str | None, retry_after_s: float) -> None:
        super().__init__(
            f"circuit {name} is open ({reason or 'no reason recorded'}); "
            f"next trial in {retry_after_s:.1f}s"
        )
        self.name = name
        self.reason = reason
        self.retry_after_s = retry_after_s


def _summary(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: CircuitBreaker) -> None:
        self._owner = owner

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self._owner._on_failure(exc)

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._owner._on_state_change(old_state.name if old_state else None, new_state.name)


class CircuitBreaker:
    """pybreaker with a recorded reason, a forced trip, and states as an enum.

    Note that pybreaker holds its lock for the duration of a call, so calls through one breaker
    run one at a time; callers put one whole batch through it, not each request.
    """

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        excluded: Sequence[type[BaseException]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._reason: str | None = None
        self._pending_reason: str | None = None
        self._last_failure: str | None = None
        self._opened_at: float | None = None
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=settings.failure_threshold,
            reset_timeout=settings.cool_down_s,
            exclude=list(excluded),
            listeners=[_Listener(self)],
            name=name,
            # Re-raise the failure that tripped the breaker, not pybreaker's generic error.
            throw_new_error_on_trip=False,
        )

    @property
    def state(self) -> BreakerState:
        return BreakerState(self._breaker.current_state)

    @property
    def reason(self) -> str | None:
        """Why the breaker is open or half-open; None once it closed again."""
        return None if self.state is BreakerState.CLOSED else self._reason

    @property
    def failure_count(self) -> int:
        return int(self._breaker.fail_counter)

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when it would now)."""
        if self.state is not BreakerState.OPEN or self._opened_at is None:
            return 0.0
        return max(0.0, self.settings.cool_down_s - (self._clock() - self._opened_at))

    def allows_call(self) -> bool:
        """True when a call would be attempted (closed, half-open, or cool-down over)."""
        return self.state is not BreakerState.OPEN or self.retry_after_s() <= 0.0

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `func` under the breaker; `CircuitOpenError` if it is open and cooling down."""
        if not self.allows_call():
            raise CircuitOpenError(self.name, self._reason, self.retry_after_s())
        if self.state is BreakerState.OPEN:
            # pybreaker measures the cool-down on the wall clock; ours may be injected or
            # slightly ahead, so hand it a breaker that is already due for its trial.
            self._breaker.half_open()
        try:
            return self._breaker.call(func, *args, **kwargs)
        except pybreaker.CircuitBreakerError as exc:
            raise CircuitOpenError(self.name, self._reason, self.retry_after_s()) from exc

    def trip(self, reason: str) -> None:
        """Open now, whatever the count: a failed readiness probe needs no second opinion."""
        self._pending_reason = reason
        self._breaker.open()
        # Re-opening an open breaker sends no state change; keep the newest reason regardless.
        self._reason = reason
        self._opened_at = self._clock()
        self._pending_reason = None

    def reset(self) -> None:
        """Close after an out-of-band success (a readiness probe passed after the cool-down)."""
        if self.state is not BreakerState.CLOSED:
            self._breaker.close()

    def _on_failure(self, exc: BaseException) -> None:
        self._last_failure = _summary(exc)

    def _on_state_change(self, old: str | None, new: str) -> None:
        if new == BreakerState.OPEN.value:
            self._opened_at = self._clock()
            self._reason = self._pending_reason or (
                f"{self.failure_count} consecutive failure(s); last: {self._last_failure}"
                if old == BreakerState.CLOSED.value
                else f"trial call failed: {self._last_failure}"
            )
            log.warning(
                "circuit_opened",
                breaker=self.name,
                reason=self._reason,
                cool_down_s=self.settings.cool_down_s,
            )
        elif new == BreakerState.HALF_OPEN.value:
            log.info("circuit_half_open", breaker=self.name, reason=self._reason)
        elif new == BreakerState.CLOSED.value and old is not None:
            log.info("circuit_closed", breaker=self.name, previous_reason=self._reason)
            self._reason = None
            self._opened_at = None


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def shared_breaker(
    name: str, settings: BreakerSettings, *, excluded: Sequence[type[BaseException]] = ()
) -> CircuitBreaker:
    """This process's breaker for `name`; a new one if the settings changed."""
    with _registry_lock:
        existing = _registry.get(name)
        if existing is not None and existing.settings == settings:
            return existing
        breaker = CircuitBreaker(name, settings, excluded=excluded)
        _registry[name] = breaker
        return breaker


def reset_shared_breakers() -> None:
    """Forget every shared breaker (tests; a process that knows the world changed)."""
    with _registry_lock:
        _registry.clear()
