"""The test fault proxy's own guarantees (deterministic, bounded, self-stopping) and the pure
ledger logic (exactly-once verification)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from asr_assets.core.ledger import ledger_table, verify_commit
from asr_assets.core.models import ModelInfo
from asr_assets.core.tables import ERRORS_SCHEMA, PHRASE_RESULTS_SCHEMA
from tests.support.fault_proxy import (
    FaultKind,
    FaultPlan,
    FaultProxy,
    _Decider,
    running_fault_proxy,
)


@contextmanager
def upstream() -> Iterator[str]:
    class Hello(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b"hello " + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_decisions_are_deterministic_and_bounded() -> None:
    plan = FaultPlan.single(FaultKind.HTTP_500, 0.5, seed=3, max_consecutive=2)
    identities = [f"GET /k{i % 7}" for i in range(400)]
    first = [_Decider(plan).decide(i) for i in identities[:1]]
    runs = []
    for _ in range(2):
        decider = _Decider(plan)
        runs.append([decider.decide(identity) for identity in identities])
    assert runs[0] == runs[1] and first[0] == runs[0][0]
    assert 0.3 < sum(d is not None for d in runs[0]) / len(identities) < 0.6
    # Never more than two faults in a row for one identity.
    for key in {i for i in identities}:
        streak = 0
        for identity, decision in zip(identities, runs[0], strict=True):
            if identity != key:
                continue
            streak = streak + 1 if decision is not None else 0
            assert streak <= 2
    budget = _Decider(FaultPlan.single(FaultKind.HTTP_500, 1.0, max_faults=3, max_consecutive=99))
    assert sum(budget.decide(f"GET /{i}") is not None for i in range(50)) == 3
    with pytest.raises(ValueError):
        FaultPlan(rates={FaultKind.HTTP_500: 0.7, FaultKind.RESET: 0.7})


def test_the_proxy_forwards_faults_and_resets() -> None:
    with upstream() as origin:
        with running_fault_proxy(origin, FaultPlan(rates={})) as proxy:
            assert _get(f"{proxy.url}/a?x=1") == (200, b"hello /a?x=1")
        plan = FaultPlan.single(FaultKind.SLOW_DOWN, 1.0, max_consecutive=1)
        with running_fault_proxy(origin, plan) as proxy:
            status, body = _get(f"{proxy.url}/bucket/key")
            assert status == 503 and b"<Code>SlowDown</Code>" in body
            assert _get(f"{proxy.url}/bucket/key") == (200, b"hello /bucket/key")  # bounded
        plan = FaultPlan.single(FaultKind.RESET, 1.0, max_consecutive=1)
        with running_fault_proxy(origin, plan) as proxy:
            with pytest.raises((ConnectionError, urllib.error.URLError)):
                _get(f"{proxy.url}/r")
            assert _get(f"{proxy.url}/r")[0] == 200
            assert proxy.stats.injected == {"connection_reset": 1}


def test_the_proxy_stops_by_itself() -> None:
    with upstream() as origin:
        proxy = FaultProxy(origin, FaultPlan(rates={}, lifetime_s=0.2)).start()
        assert _get(f"{proxy.url}/x")[0] == 200
        time.sleep(0.6)
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            _get(f"{proxy.url}/x")


MODEL = ModelInfo(name="m", version="1", sha256="abc")


def _phrases(keys: list[tuple[str, int]]) -> pa.Table:
    rows = [
        {
            "activity_id": a,
            "phrase_index": i,
            "tenant_id": "t",
            "activity_date": date(2026, 11, 27),
            "expected_text": "b",
            "transcript": "b",
            "n_expected": 1,
            "n_correct": 1,
            "n_inserted": 0,
            "accuracy": 1.0,
            "duration_s": 1.0,
            "inference_ms": 1.0,
            "alignment_ms": 1.0,
            "alignment_method": "ctc_forced",
            "engine": "local-torch",
            "model_name": "m",
            "model_version": "1",
            "model_sha256": "abc",
        }
        for a, i in keys
    ]
    return pa.Table.from_pylist(rows, schema=PHRASE_RESULTS_SCHEMA)


def _errors(keys: list[tuple[str, int, str]]) -> pa.Table:
    rows = [
        {
            "activity_id": a,
            "phrase_index": i,
            "tenant_id": "t",
            "activity_date": date(2026, 11, 27),
            "stage": "phrase_audio",
            "reason_code": reason,
            "message": "",
        }
        for a, i, reason in keys
    ]
    return pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)


NOW = datetime(2026, 11, 28, tzinfo=UTC)


def test_ledger_rows_cover_every_phrase_once() -> None:
    phrases = _phrases([("a", 0), ("a", 1)])
    errors = _errors([("b", 0, "audio_empty")])
    ledger = ledger_table("run-1", MODEL, phrases, errors, NOW).to_pylist()
    assert [(r["activity_id"], r["phrase_index"], r["outcome"]) for r in ledger] == [
        ("a", 0, "scored"),
        ("a", 1, "scored"),
        ("b", 0, "errored"),
    ]
    assert {r["run_id"] for r in ledger} == {"run-1"}
    assert ledger[2]["reason_code"] == "audio_empty" and ledger[2]["model_sha256"] == "abc"


def test_verification_finds_duplicates_losses_and_foreign_ledgers() -> None:
    expected = [("a", 0), ("a", 1), ("b", 0)]
    phrases = _phrases([("a", 0), ("a", 1)])
    errors = _errors([("b", 0, "audio_empty")])
    ledger = ledger_table("run-1", MODEL, phrases, errors, NOW)
    assert verify_commit(expected, "run-1", phrases, errors, ledger).ok

    lost = verify_commit(expected, "run-1", _phrases([("a", 0)]), errors, ledger)
    assert lost.missing == [("a", 1)] and lost.lost == 1 and not lost.ok

    doubled = _phrases([("a", 0), ("a", 0), ("a", 1)])
    twice = verify_commit(expected, "run-1", doubled, errors, ledger)
    assert twice.duplicates == [("a", 0)] and not twice.ok

    both = verify_commit(expected, "run-1", phrases, _errors([("a", 0, "x"), ("b", 0, "y")]), None)
    assert both.duplicates == [("a", 0)] and "names no ledger" in both.ledger_mismatches[0]

    foreign = verify_commit(expected, "run-2", phrases, errors, ledger)
    assert not foreign.ok and "run-1" in foreign.ledger_mismatches[0]

    # A repeated catalog row is reported under its original's key: accounted for, not doubled.
    repeated = _errors([("b", 0, "audio_empty"), ("a", 0, "duplicate_phrase")])
    with_repeat = ledger_table("run-1", MODEL, phrases, repeated, NOW)
    check = verify_commit([*expected, ("a", 0)], "run-1", phrases, repeated, with_repeat)
    assert check.ok, check
