"""Preconfigured tenacity retrying objects, one policy per dependency.

Exponential backoff with full jitter (so many workers retrying after one outage do not stampede
in lockstep), a bounded number of attempts and a bounded total delay. Each knob is tunable by an
environment variable read when the policy is built, never at import:
`ASR_RETRY_<DEPENDENCY>_ATTEMPTS`, `..._INITIAL_S`, `..._MAX_S`, `..._DEADLINE_S`.
Which exceptions are worth retrying is the caller's knowledge (an S3 `SlowDown` is, a 403 is not),
so callers pass a predicate.

Every retry, whichever layer executes it (a tenacity loop here, or botocore's request loop driven
by `reliability/aws_hooks.py`), is logged at WARNING in the log schema and counted per dependency
(`retry_counts`), so stages can report how many retries a run needed (metrics, fault suite).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

import tenacity

from asr_assets.observability.logging import get_logger

log = get_logger(__name__)


class Dependency(StrEnum):
    S3 = "s3"
    ATHENA = "athena"
    TRITON = "triton"
    APPSYNC = "appsync"


@dataclass(frozen=True)
class RetrySettings:
    attempts: int
    initial_s: float
    max_s: float
    deadline_s: float


# Sized for independent faults, not for short bursts: a run makes ~1,400 S3 requests, and with
# a 20% chance that any one attempt fails, 5 attempts leave 0.2^5 x 1,400 ≈ 0.45 requests per run
# exhausted (about 36% of runs then need a Dagster step retry); 10 attempts leave 0.2^10 x 1,400
# ≈ 1.4e-4 (one run in ~7,000). The backoff cap keeps 10 attempts within the deadline: the
# sleeps add up to at most ~21 s for S3. `tests/unit/test_retry_budget.py` holds these numbers.
DEFAULTS: Mapping[Dependency, RetrySettings] = {
    Dependency.S3: RetrySettings(attempts=10, initial_s=0.1, max_s=5.0, deadline_s=60.0),
    Dependency.ATHENA: RetrySettings(attempts=8, initial_s=0.5, max_s=10.0, deadline_s=120.0),
    Dependency.TRITON: RetrySettings(attempts=3, initial_s=0.1, max_s=2.0, deadline_s=30.0),
    Dependency.APPSYNC: RetrySettings(attempts=10, initial_s=0.2, max_s=10.0, deadline_s=90.0),
}


def settings_for(dependency: Dependency, environ: Mapping[str, str] | None = None) -> RetrySettings:
    """Defaults overridden by `ASR_RETRY_<DEP>_<KNOB>` environment variables."""
    env = os.environ if environ is None else environ
    base = DEFAULTS[dependency]
    prefix = f"ASR_RETRY_{dependency.value.upper()}_"
    overrides: dict[str, float | int] = {}
    for knob, cast in (
        ("attempts", int),
        ("initial_s", float),
        ("max_s", float),
        ("deadline_s", float),
    ):
        raw = env.get(prefix + knob.upper())
        if raw is not None:
            overrides[knob] = cast(raw)
    return replace(base, **overrides)


_retry_counts: Counter[str] = Counter()
_retry_counts_lock = threading.Lock()


def record_retry(dependency: Dependency) -> None:
    """Count one retry of `dependency` in this process (whichever layer performed it)."""
    with _retry_counts_lock:
        _retry_counts[dependency.value] += 1


def retry_counts() -> dict[str, int]:
    """Retries per dependency since the process started; callers diff two snapshots."""
    with _retry_counts_lock:
        return dict(_retry_counts)


def backoff_delay(settings: RetrySettings, attempt: int) -> float:
    """Full-jitter exponential delay before retry number `attempt` (1-based).

    The same curve as the tenacity policies below (`wait_random_exponential`), for layers that
    compute their own sleep (botocore's request loop).
    """
    ceiling = min(settings.max_s, settings.initial_s * 2 ** max(0, attempt - 1))
    return random.uniform(0.0, max(0.0, ceiling))  # noqa: S311 - jitter, not cryptography


def retrying(
    dependency: Dependency,
    retry_if: Callable[[BaseException], bool],
    *,
    settings: RetrySettings | None = None,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """A `tenacity.Retrying` for one dependency; the last exception is re-raised unchanged."""
    chosen = settings or settings_for(dependency)

    def _log_retry(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        record_retry(dependency)
        log.warning(
            "retrying",
            dependency=dependency.value,
            attempt=state.attempt_number,
            error=type(error).__name__ if error else None,
            sleep_s=round(state.upcoming_sleep, 3) if state.upcoming_sleep else 0.0,
            status="retrying",
        )
        if on_retry is not None:
            on_retry(state)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(chosen.attempts)
        | tenacity.stop_after_delay(chosen.deadline_s),
        wait=tenacity.wait_random_exponential(multiplier=chosen.initial_s, max=chosen.max_s),
        retry=tenacity.retry_if_exception(retry_if),
        before_sleep=_log_retry,
        reraise=True,
    )


# Quiet tenacity's own logger: our before_sleep hook logs every retry in our schema.
logging.getLogger("tenacity").setLevel(logging.WARNING)
