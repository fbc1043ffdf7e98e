"""The reliability policy beyond tenacity: rate limits per dependency, the botocore hooks that
run our retry policy inside botocore's request loop, retry counting, and the Dagster policies."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from botocore.exceptions import ClientError, EndpointConnectionError

from asr_assets.reliability.aws_hooks import (
    EXHAUSTED_MARKER,
    RateLimitHook,
    RetryHook,
    retries_exhausted,
)
from asr_assets.reliability.rate_limit import (
    RateLimitSettings,
    TokenBucket,
    rate_settings_for,
    reset_shared_buckets,
    shared_bucket,
)
from asr_assets.reliability.retry import (
    Dependency,
    RetrySettings,
    backoff_delay,
    retry_counts,
    retrying,
)
from asr_assets.resources.athena import is_retryable_athena_error, is_retryable_query_error
from asr_assets.resources.s3 import is_retryable_s3_error

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = RetrySettings(attempts=3, initial_s=0.1, max_s=1.0, deadline_s=10.0)


def test_rate_limits_per_dependency_come_from_the_environment() -> None:
    assert rate_settings_for(Dependency.S3, {}) == RateLimitSettings(per_s=1000.0, burst=200.0)
    tuned = rate_settings_for(
        Dependency.ATHENA, {"ASR_RATE_ATHENA_PER_S": "5", "ASR_RATE_ATHENA_BURST": "2"}
    )
    assert tuned == RateLimitSettings(per_s=5.0, burst=2.0)
    assert {d for d in Dependency} == {
        Dependency.S3,
        Dependency.ATHENA,
        Dependency.TRITON,
        Dependency.APPSYNC,
    }
    with pytest.raises(ValueError):
        RateLimitSettings(per_s=-1, burst=1)


def test_shared_buckets_are_per_process_and_follow_their_settings() -> None:
    reset_shared_buckets()
    try:
        first = shared_bucket(Dependency.TRITON, RateLimitSettings(per_s=10, burst=5))
        assert shared_bucket(Dependency.TRITON, RateLimitSettings(per_s=10, burst=5)) is first
        assert isinstance(first, TokenBucket) and first.capacity == 5
        changed = shared_bucket(Dependency.TRITON, RateLimitSettings(per_s=20, burst=5))
        assert changed is not first
        unlimited = shared_bucket(Dependency.S3, RateLimitSettings(per_s=0, burst=1))
        assert all(unlimited.try_acquire() for _ in range(10_000))
    finally:
        reset_shared_buckets()


def test_backoff_is_full_jitter_under_a_ceiling() -> None:
    delays = [backoff_delay(SETTINGS, attempt) for attempt in (1, 2, 3, 8) for _ in range(200)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert max(backoff_delay(SETTINGS, 1) for _ in range(200)) <= 0.1
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not lockstep


def test_every_retry_is_counted_per_dependency() -> None:
    before = retry_counts().get("triton", 0)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("reset")
        return "ok"

    fast = RetrySettings(attempts=4, initial_s=0.0, max_s=0.0, deadline_s=5.0)
    assert retrying(Dependency.TRITON, lambda e: True, settings=fast)(flaky) == "ok"
    assert retry_counts()["triton"] - before == 2


def _response(status: int, code: str) -> tuple[object, dict]:
    parsed = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return SimpleNamespace(status_code=status), parsed


def test_the_botocore_hook_retries_what_the_policy_calls_transient() -> None:
    now = {"t": 0.0}
    hook = RetryHook(Dependency.ATHENA, is_retryable_athena_error, SETTINGS, clock=lambda: now["t"])
    before = retry_counts().get("athena", 0)
    request: dict = {"context": {}}
    throttled = _response(400, "ThrottlingException")
    delay = hook(attempts=1, response=throttled, request_dict=request)
    assert delay is not None and 0.0 <= delay <= 0.1
    assert (
        hook(attempts=2, response=_response(503, "ServiceUnavailable"), request_dict=request)
        is not None
    )
    assert retry_counts()["athena"] - before == 2
    # Out of attempts: stop, and mark a caught exception so an outer layer does not retry it.
    error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert hook(attempts=3, caught_exception=error, request_dict=request) is None
    assert retries_exhausted(error)
    # Not transient, or a success: never retried.
    assert (
        hook(attempts=1, response=_response(400, "InvalidRequestException"), request_dict={})
        is None
    )
    assert hook(attempts=1, response=_response(200, ""), request_dict={}) is None
    # Past the deadline, counted from the first attempt of the request.
    late: dict = {"context": {}}
    assert hook(attempts=1, response=throttled, request_dict=late) is not None
    now["t"] += 11.0
    assert hook(attempts=2, response=throttled, request_dict=late) is None


def test_the_whole_query_is_not_retried_after_per_request_retries() -> None:
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "GetQueryExecution",
    )
    assert is_retryable_query_error(throttled)  # never went through botocore's loop
    retried = ClientError(
        {
            "Error": {"Code": "ThrottlingException"},
            "ResponseMetadata": {"HTTPStatusCode": 400, "RetryAttempts": 3},
        },
        "GetQueryExecution",
    )
    assert not is_retryable_query_error(retried)
    dropped = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    setattr(dropped, EXHAUSTED_MARKER, True)
    assert is_retryable_athena_error(dropped) and not is_retryable_query_error(dropped)


def test_the_rate_limit_hook_takes_a_token_per_attempt() -> None:
    now = {"t": 0.0}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now["t"] += seconds

    bucket = TokenBucket(2.0, 1.0, clock=lambda: now["t"], sleep=sleep)
    hook = RateLimitHook(Dependency.ATHENA, bucket)
    assert hook(request=object()) is None  # None: botocore sends the request
    hook(request=object())
    assert slept == [pytest.approx(0.5)]


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("AccessDenied", 403, False),
        ("NoSuchKey", 404, False),
    ],
)
def test_s3_errors_the_fault_proxy_injects_are_classified(
    code: str, status: int, retryable: bool
) -> None:
    error = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )
    assert is_retryable_s3_error(error) is retryable


def test_network_facing_assets_retry_their_steps() -> None:
    import dagster as dg

    from asr_assets.definitions import ALL_ASSETS

    for asset in ALL_ASSETS:
        policy = asset.op.retry_policy
        assert policy == dg.RetryPolicy(
            max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL
        ), asset.key


def test_run_retries_in_dagster_yaml_do_not_multiply_step_retries(tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))  # validates against Dagster's schema
    retries = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_retries"]
    assert config["run_retries"]["enabled"] is True
    assert retries["max_retries"] >= 1
    # Step failures are retried by the assets' RetryPolicy; runs are retried only when the run
    # worker itself died (crash, eviction), or a flaky dependency would be hit 4 x 2 times.
    assert retries["retry_on_asset_or_op_failure"] is False
