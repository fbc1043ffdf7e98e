"""AppSyncPublisher against a real GraphQL server (strawberry + uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date

import pytest

from asr_assets.core.models import ActivityResult
from asr_assets.resources.publisher import (
    AppSyncAuthMode,
    AppSyncConfigError,
    AppSyncPublisher,
    mutation_input,
)
from tests.support.graphql_server import AppSyncState, Fault, running_appsync

pytestmark = pytest.mark.integration

API_KEY = "da2-test-key-not-a-secret-123"
DAY = "2026-11-27"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production backoff is seconds; the policy reads its knobs from the environment."""
    monkeypatch.setenv("ASR_RETRY_APPSYNC_INITIAL_S", "0.01")
    monkeypatch.setenv("ASR_RETRY_APPSYNC_MAX_S", "0.05")
    monkeypatch.setenv("ASR_RETRY_APPSYNC_ATTEMPTS", "4")


@pytest.fixture
def appsync() -> Iterator[tuple[str, AppSyncState]]:
    with running_appsync(api_key=API_KEY, resolver_delay_s=0.01) as server:
        yield server


def _records(count: int, run_id: str = "run-1") -> list[ActivityResult]:
    return [
        ActivityResult(
            activity_id=f"act-{i}",
            tenant_id="tenant-a",
            activity_date=date(2026, 11, 27),
            n_phrases=2,
            n_scored=2,
            n_errors=0,
            n_expected_letters=5,
            n_correct_letters=4,
            accuracy=0.8,
            model_name="tiny",
            model_version="1",
            model_sha256="a" * 64,
            run_id=run_id,
            idempotency_key=f"key-{i}-{run_id}",
            phrases=[{"phrase_index": 0, "accuracy": 1.0}, {"phrase_index": 1, "error": "x"}],
        )
        for i in range(count)
    ]


def _publisher(url: str, **overrides: object) -> AppSyncPublisher:
    return AppSyncPublisher(url=url, api_key=API_KEY, **overrides)  # type: ignore[arg-type]


def test_publish_succeeds(appsync: tuple[str, AppSyncState]) -> None:
    url, state = appsync
    records = _records(5)
    report = _publisher(url, max_concurrency=2).publish(DAY, records)
    assert (report.published, report.duplicates, report.failed, report.retries) == (5, 0, 0, 0)
    assert sorted(state.records) == [r.activity_id for r in records]
    stored = state.records["act-3"]
    assert stored["idempotency_key"] == "key-3-run-1"
    assert stored["phrases"] == records[3].model_dump(mode="json")["phrases"]
    assert stored["activity_date"] == DAY and stored["accuracy"] == 0.8
    assert all(call.headers["x-api-key"] == API_KEY for call in state.calls)
    assert len(state.calls) == 5  # one mutation per activity
    assert 1 < state.max_in_flight <= 2  # concurrent, and bounded


def test_throttled_then_succeeds(appsync: tuple[str, AppSyncState]) -> None:
    url, state = appsync
    # Three failed attempts of the first activity, within the four the policy allows.
    state.faults.extend([Fault.HTTP_429, Fault.THROTTLING_ERROR, Fault.HTTP_503])
    report = _publisher(url, max_concurrency=1).publish(DAY, _records(3))
    assert (report.published, report.failed) == (3, 0)
    assert report.retries == 3
    answers = [call.answered for call in state.calls]
    assert answers[:3] == ["http_429", "throttling_error", "http_503"]
    assert answers[3:] == ["CREATED"] * 3
    assert len(state.writes) == 3


def test_duplicate_publish_is_a_no_op(appsync: tuple[str, AppSyncState]) -> None:
    url, state = appsync
    publisher = _publisher(url)
    records = _records(4)
    assert publisher.publish(DAY, records).published == 4
    writes = dict(state.writes)
    again = publisher.publish(DAY, records)
    assert (again.published, again.duplicates, again.failed) == (0, 4, 0)
    assert state.writes == writes
    # A new run is a new version of each record: new keys, new writes.
    assert publisher.publish(DAY, _records(4, run_id="run-2")).published == 4
    assert len(state.writes) == 8 and state.records["act-0"]["run_id"] == "run-2"


def test_retry_after_a_lost_answer_writes_once(appsync: tuple[str, AppSyncState]) -> None:
    """The write lands but the 502 loses the answer: the retry is answered DUPLICATE."""
    url, state = appsync
    state.faults.append(Fault.WRITE_THEN_502)
    report = _publisher(url, max_concurrency=1).publish(DAY, _records(1))
    assert report.failed == 0 and report.duplicates == 1 and report.retries == 1
    assert len(state.writes) == 1
    assert [c.answered for c in state.calls] == ["write_then_502", "DUPLICATE"]


def test_partial_failure_is_counted(
    appsync: tuple[str, AppSyncState], caplog: pytest.LogCaptureFixture
) -> None:
    url, state = appsync
    state.activity_faults["act-1"] = Fault.REJECT  # permanent: not retried
    state.activity_faults["act-4"] = Fault.HTTP_503  # transient, but never recovers
    caplog.set_level(logging.INFO, logger="asr_assets")
    report = _publisher(url).publish(DAY, _records(6))
    assert (report.published, report.duplicates, report.failed) == (4, 0, 2)
    assert report.failures == {"act-1": "graphql_BadRequestException", "act-4": "http_503"}
    assert report.failures_by_reason == {"graphql_BadRequestException": 1, "http_503": 1}
    assert sum(c.activity_id == "act-1" for c in state.calls) == 1
    assert sum(c.activity_id == "act-4" for c in state.calls) == 4  # ASR_RETRY_APPSYNC_ATTEMPTS
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name.startswith("asr_")]
    failed = [e for e in events if e["event"] == "activity_publish_failed"]
    assert sorted(e["activity_id"] for e in failed) == ["act-1", "act-4"]
    assert sum(e["event"] == "activity_published" for e in events) == 4
    summary = next(e for e in events if e["event"] == "appsync_publish_finished")
    assert (summary["published"], summary["failed"]) == (4, 2)
    assert API_KEY not in caplog.text


def test_wrong_api_key_fails_without_retrying(appsync: tuple[str, AppSyncState]) -> None:
    url, state = appsync
    report = AppSyncPublisher(url=url, api_key="wrong").publish(DAY, _records(2))
    assert report.failed == 2 and set(report.failures.values()) == {"http_401"}
    assert len(state.calls) == 2


def test_iam_requests_are_sigv4_signed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # The default credential chain, fed from the environment only.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with running_appsync(require_sigv4=True) as (url, state):
        publisher = AppSyncPublisher(url=url, auth_mode=AppSyncAuthMode.IAM, region="eu-west-1")
        report = publisher.publish(DAY, _records(2))
        assert report.published == 2
        auth = state.calls[0].headers["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert "/eu-west-1/appsync/aws4_request" in auth
        assert state.calls[0].headers["x-amz-security-token"] == "session-token"
        assert "x-api-key" not in state.calls[0].headers


def test_configuration_errors() -> None:
    records = _records(1)
    with pytest.raises(AppSyncConfigError, match="https"):
        AppSyncPublisher(url="http://example.com/graphql", api_key="k").publish(DAY, records)
    with pytest.raises(AppSyncConfigError, match="api_key"):
        AppSyncPublisher(url="https://example.com/graphql").publish(DAY, records)
    publisher = AppSyncPublisher(url="https://abc.appsync-api.eu-west-1.amazonaws.com/graphql")
    assert publisher.destination(DAY).startswith("https://abc.appsync-api")
    assert "k" not in publisher.destination(DAY).split("(")[1].replace("publishActivityResult", "")


def test_mutation_input_is_camel_case_and_json() -> None:
    payload = mutation_input(_records(1)[0])
    assert payload["activityId"] == "act-0" and payload["idempotencyKey"] == "key-0-run-1"
    assert json.loads(str(payload["phrases"]))[0] == {"accuracy": 1.0, "phrase_index": 0}
