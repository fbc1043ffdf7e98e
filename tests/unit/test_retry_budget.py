"""The per-request retry policies hold independent faults without Dagster step retries."""

from __future__ import annotations

import random

import pytest

from asr_assets.reliability.retry import Dependency, RetrySettings, retrying, settings_for
from tests.support.fault_proxy import FaultKind, FaultPlan, _Decider

REQUESTS_PER_RUN = 1_400  # a partition's S3 requests, as the outside campaign measured


@pytest.mark.parametrize("dependency", [Dependency.S3, Dependency.APPSYNC, Dependency.ATHENA])
def test_a_run_at_20_percent_independent_faults_rarely_exhausts_a_request(
    dependency: Dependency,
) -> None:
    settings = settings_for(dependency, {})
    exhausted_per_run = REQUESTS_PER_RUN * 0.2**settings.attempts
    # 5 attempts gave 0.45 per run, i.e. ~36% of runs needed a step retry.
    assert exhausted_per_run < 0.005
    # The full-jitter backoff at its worst still fits the deadline.
    worst_sleeps = sum(
        min(settings.max_s, settings.initial_s * 2**n) for n in range(settings.attempts - 1)
    )
    assert worst_sleeps < settings.deadline_s


def test_ten_runs_of_1400_requests_at_20_percent_never_exhaust() -> None:
    settings = settings_for(Dependency.S3, {})
    fast = RetrySettings(settings.attempts, 0.0, 0.0, settings.deadline_s)
    rng = random.Random(11)

    class Injected(Exception):
        pass

    def request() -> str:
        if rng.random() < 0.2:
            raise Injected
        return "ok"

    policy = retrying(Dependency.S3, lambda e: isinstance(e, Injected), settings=fast)
    exhausted = 0
    for _ in range(10 * REQUESTS_PER_RUN):
        try:
            policy(request)
        except Injected:
            exhausted += 1
    assert exhausted == 0


def test_the_fault_proxy_faults_each_attempt_independently() -> None:
    decider = _Decider(FaultPlan.single(FaultKind.HTTP_500, 0.5, seed=5))
    streaks = []
    for key in range(200):
        streak = 0
        while decider.decide(f"GET /k{key}") is not None:
            streak += 1
        streaks.append(streak)
    # Geometric streaks: with p = 0.5, P(>= 3 in a row) = 1/8, so ~25 of 200 requests.
    assert max(streaks) >= 5
    assert 10 <= sum(s >= 3 for s in streaks) <= 45
