import pytest

from asr_assets.reliability.rate_limit import TokenBucket
from asr_assets.reliability.retry import Dependency, RetrySettings, retrying, settings_for

FAST = RetrySettings(attempts=4, initial_s=0.0, max_s=0.0, deadline_s=5.0)


class Throttled(Exception):
    pass


class Forbidden(Exception):
    pass


def test_retries_only_what_the_caller_calls_retryable() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise Throttled
        return "ok"

    assert retrying(Dependency.S3, lambda e: isinstance(e, Throttled), settings=FAST)(flaky) == "ok"
    assert calls["n"] == 3

    def forbidden() -> None:
        calls["n"] += 1
        raise Forbidden

    calls["n"] = 0
    with pytest.raises(Forbidden):
        retrying(Dependency.S3, lambda e: isinstance(e, Throttled), settings=FAST)(forbidden)
    assert calls["n"] == 1


def test_gives_up_after_the_attempt_budget_with_the_last_error() -> None:
    calls = {"n": 0}

    def always() -> None:
        calls["n"] += 1
        raise Throttled(calls["n"])

    with pytest.raises(Throttled) as raised:
        retrying(Dependency.TRITON, lambda e: True, settings=FAST)(always)
    assert calls["n"] == 4 and raised.value.args == (4,)


def test_settings_come_from_environment_variables() -> None:
    settings = settings_for(
        Dependency.APPSYNC, {"ASR_RETRY_APPSYNC_ATTEMPTS": "9", "ASR_RETRY_APPSYNC_MAX_S": "0.5"}
    )
    assert (settings.attempts, settings.max_s) == (9, 0.5)
    assert settings_for(Dependency.APPSYNC, {}).attempts == 10


def test_token_bucket_limits_rate_with_a_fake_clock() -> None:
    now = {"t": 0.0}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now["t"] += seconds

    bucket = TokenBucket(rate_per_s=2.0, capacity=2.0, clock=lambda: now["t"], sleep=sleep)
    assert bucket.try_acquire() and bucket.try_acquire()
    assert not bucket.try_acquire()
    assert bucket.acquire()
    assert slept == [pytest.approx(0.5)]
    assert not bucket.acquire(timeout_s=0.1)
