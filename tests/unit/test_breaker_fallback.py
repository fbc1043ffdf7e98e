"""Circuit breaker, the fallback engine around it, and per-phrase engine attribution.

The engines here are fakes (unit tier); the real Triton path is in tests/integration.
"""

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from asr_assets.assets.transcripts import _infer_isolating, engine_names
from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.errors import PhraseError
from asr_assets.core.models import ModelInfo
from asr_assets.inference.base import Emissions, InferenceError
from asr_assets.inference.fallback import FallbackInferenceEngine, InferenceUnavailableError
from asr_assets.inference.triton import TritonRequestError, TritonUnavailableError
from asr_assets.reliability.breaker import (
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    reset_shared_breakers,
    shared_breaker,
)
from asr_assets.resources.inference import TritonInferenceResource
from tests.support.models import VOCAB

MODEL = ModelInfo(name="m", version="1", sha256="a" * 64)
VOCABULARY = CtcVocabulary.from_vocab(VOCAB)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


class Refused(Exception):
    pass


def _breaker(threshold: int = 2, cool_down: float = 10.0, clock: Clock | None = None):
    return CircuitBreaker(
        "test",
        BreakerSettings(failure_threshold=threshold, cool_down_s=cool_down),
        excluded=(Refused,),
        clock=clock or Clock(),
    )


def _fail(exc: BaseException):
    def run() -> None:
        raise exc

    return run


def test_opens_after_consecutive_failures_with_the_reason() -> None:
    breaker = _breaker(threshold=2)
    with pytest.raises(Boom):
        breaker.call(_fail(Boom("first")))
    assert breaker.state is BreakerState.CLOSED and breaker.failure_count == 1
    with pytest.raises(Boom):
        breaker.call(_fail(Boom("second")))
    assert breaker.state is BreakerState.OPEN
    assert "2 consecutive" in breaker.reason and "second" in breaker.reason
    calls = []
    with pytest.raises(CircuitOpenError, match="second"):
        breaker.call(lambda: calls.append(1))
    assert calls == []


def test_a_success_resets_the_count_and_refusals_do_not_count() -> None:
    breaker = _breaker(threshold=2)
    with pytest.raises(Boom):
        breaker.call(_fail(Boom()))
    assert breaker.call(lambda: "ok") == "ok"
    with pytest.raises(Boom):
        breaker.call(_fail(Boom()))
    for _ in range(3):
        with pytest.raises(Refused):
            breaker.call(_fail(Refused()))
    assert breaker.state is BreakerState.CLOSED


def test_half_opens_after_the_cool_down() -> None:
    clock = Clock()
    breaker = _breaker(threshold=1, cool_down=10.0, clock=clock)
    with pytest.raises(Boom):
        breaker.call(_fail(Boom("down")))
    assert not breaker.allows_call() and breaker.retry_after_s() == pytest.approx(10.0)
    clock.now += 10.5
    assert breaker.allows_call()
    with pytest.raises(Boom):
        breaker.call(_fail(Boom("still down")))  # the trial fails: open again
    assert breaker.state is BreakerState.OPEN and "trial call failed" in breaker.reason
    clock.now += 10.5
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state is BreakerState.CLOSED and breaker.reason is None


def test_trip_opens_at_once_with_the_given_reason() -> None:
    breaker = _breaker(threshold=5)
    breaker.trip("readiness probe failed: model not ready")
    assert breaker.state is BreakerState.OPEN
    assert breaker.reason == "readiness probe failed: model not ready"
    breaker.trip("newer reason")
    assert breaker.reason == "newer reason"
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED


def test_shared_breakers_are_one_per_name_and_settings() -> None:
    reset_shared_breakers()
    settings = BreakerSettings(failure_threshold=2, cool_down_s=1.0)
    assert shared_breaker("a", settings) is shared_breaker("a", settings)
    assert shared_breaker("a", settings) is not shared_breaker("b", settings)
    assert shared_breaker("a", BreakerSettings(3, 1.0)).settings.failure_threshold == 3
    reset_shared_breakers()


class FakeEngine:
    def __init__(self, name: str, fail_with: BaseException | None = None, batch: int = 64):
        self.name = name
        self.model = MODEL
        self.vocabulary = VOCABULARY
        self.max_batch_size = batch
        self.max_batch_samples = 16_000 * 1000
        self.fail_with = fail_with
        self.batches: list[int] = []
        self.ready_checks = 0
        self.closed = False

    def check_ready(self) -> None:
        self.ready_checks += 1
        if self.fail_with is not None:
            raise TritonUnavailableError("still not ready")

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(len(clips))
        return [Emissions(np.zeros((2, 28), np.float32), 0.02) for _ in clips]

    def close(self) -> None:
        self.closed = True


def _fallback(primary: FakeEngine, local: FakeEngine, breaker: CircuitBreaker, **kwargs):
    return FallbackInferenceEngine(
        primary_factory=lambda: primary,
        local_factory=lambda: local,
        breaker=breaker,
        model=MODEL,
        vocabulary=VOCABULARY,
        request_errors=(TritonRequestError,),
        **kwargs,
    )


CLIPS = [np.zeros(16_000, np.float32)] * 3


def _warnings(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    records = []
    for record in caplog.records:
        if record.levelno == logging.WARNING and event in record.getMessage():
            records.append(json.loads(record.getMessage()))
    return records


def test_failed_batches_fall_back_and_the_breaker_opens(caplog) -> None:
    caplog.set_level(logging.INFO)
    primary = FakeEngine("triton")
    local = FakeEngine("local-torch")
    engine = _fallback(primary, local, _breaker(threshold=2))
    engine.infer(CLIPS)
    assert engine.last_engine_names == ["triton"] * 3
    primary.fail_with = TritonUnavailableError("connection refused")
    engine.infer(CLIPS)  # failure 1: this batch is scored locally at once
    assert engine.last_engine_names == ["local-torch"] * 3
    engine.infer(CLIPS)  # failure 2: the breaker opens
    primary.fail_with = None
    engine.infer(CLIPS)  # open: Triton is not even tried
    assert primary.batches == [3] and local.batches == [3, 3, 3]
    report = engine.fallback_report()
    assert report["fell_back"] and report["breaker_state"] == "open"
    assert "connection refused" in report["last_fallback_reason"]
    fallbacks = _warnings(caplog, "inference_fallback")
    assert fallbacks and "connection refused" in fallbacks[-1]["reason"]
    assert _warnings(caplog, "circuit_opened")
    engine.close()
    assert primary.closed and local.closed


def test_a_failed_readiness_probe_opens_at_once(caplog) -> None:
    caplog.set_level(logging.INFO)
    local = FakeEngine("local-torch")
    breaker = _breaker(threshold=5)

    def not_ready() -> FakeEngine:
        raise TritonUnavailableError("model is not ready (state UNAVAILABLE)")

    engine = FallbackInferenceEngine(
        primary_factory=not_ready,
        local_factory=lambda: local,
        breaker=breaker,
        model=MODEL,
        vocabulary=VOCABULARY,
    )
    assert breaker.state is BreakerState.OPEN and "not ready" in breaker.reason
    engine.infer(CLIPS)
    assert engine.last_engine_name == "local-torch"
    assert "not ready" in _warnings(caplog, "inference_fallback")[0]["reason"]


def test_after_the_cool_down_a_ready_primary_takes_over_again() -> None:
    clock = Clock()
    primary = FakeEngine("triton", fail_with=TritonUnavailableError("down"))
    local = FakeEngine("local-torch")
    engine = _fallback(primary, local, _breaker(threshold=1, cool_down=5.0, clock=clock))
    engine.infer(CLIPS)
    assert engine.last_engine_name == "local-torch"
    primary.fail_with = None
    clock.now += 6.0
    engine.infer(CLIPS)
    assert engine.last_engine_name == "triton" and primary.ready_checks == 1
    assert engine.fallback_report()["breaker_state"] == "closed"


def test_local_fallback_respects_the_local_engine_limits() -> None:
    primary = FakeEngine("triton", fail_with=TritonUnavailableError("down"))
    local = FakeEngine("local-torch", batch=2)
    engine = _fallback(primary, local, _breaker(threshold=1))
    engine.infer([np.zeros(8000, np.float32)] * 5)
    assert local.batches == [2, 2, 1]


def test_a_refused_request_is_scored_locally_without_counting() -> None:
    breaker = _breaker(threshold=1)
    primary = FakeEngine("triton", fail_with=TritonRequestError("bad shape"))
    engine = _fallback(primary, FakeEngine("local-torch"), breaker)
    engine.infer(CLIPS)
    assert engine.last_engine_name == "local-torch" and breaker.state is BreakerState.CLOSED


def test_without_fallback_an_outage_fails_with_a_clear_error() -> None:
    breaker = _breaker(threshold=3)
    primary = FakeEngine("triton")
    engine = _fallback(primary, FakeEngine("local-torch"), breaker, fallback_enabled=False)
    primary.fail_with = TritonUnavailableError("connection refused")
    with pytest.raises(InferenceUnavailableError, match=r"fallback is switched off.*refused"):
        engine.infer(CLIPS)
    assert not isinstance(InferenceUnavailableError("x"), InferenceError)
    breaker.trip("readiness probe failed: server is not live")
    with pytest.raises(InferenceUnavailableError, match="not live"):
        _fallback(FakeEngine("triton"), FakeEngine("local-torch"), breaker, fallback_enabled=False)


def test_without_fallback_a_refused_request_stays_a_phrase_error() -> None:
    primary = FakeEngine("triton", fail_with=TritonRequestError("bad shape"))
    engine = _fallback(primary, FakeEngine("local-torch"), _breaker(), fallback_enabled=False)
    results = _infer_isolating(engine, CLIPS[:2])
    assert all(isinstance(output, PhraseError) for output, _ in results)


class SwitchingEngine(FakeEngine):
    """Fails batches of more than one clip; alternates engines clip by clip."""

    def __init__(self) -> None:
        super().__init__("triton")
        self.calls = 0

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if len(clips) > 1:
            raise InferenceError("batch refused")
        self.calls += 1
        self.last_engine_names = ["triton" if self.calls % 2 else "local-torch"]
        return super().infer(clips)


def test_attribution_is_per_clip_even_when_a_batch_is_isolated() -> None:
    engine = SwitchingEngine()
    results = _infer_isolating(engine, CLIPS)
    assert [name for _, name in results] == ["triton", "local-torch", "triton"]
    plain = FakeEngine("local-onnx")
    assert engine_names(plain, 2) == ["local-onnx", "local-onnx"]


def test_availability_reason_comes_from_the_breaker_and_a_probe(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_shared_breakers()
    common = {"url": "127.0.0.1:9", "model_name": "m", "model_dir": str(tiny_model_dir)}
    assert TritonInferenceResource(**common).unavailable_reason() is None  # fallback on
    resource = TritonInferenceResource(**common, fallback_enabled=False, probe_timeout_s=2.0)
    probes = []

    def failing_probe(settings, sha):
        probes.append(settings.url)
        raise TritonUnavailableError("grpc://127.0.0.1:9/m@latest: server is not live")

    monkeypatch.setattr("asr_assets.inference.triton.probe", failing_probe)
    reason = resource.unavailable_reason()
    assert reason is not None and "not live" in reason and "circuit open" in reason
    assert resource.unavailable_reason() == reason and len(probes) == 1  # open: no new probe
    assert resource.breaker().state is BreakerState.OPEN
    reset_shared_breakers()
    monkeypatch.setattr("asr_assets.inference.triton.probe", lambda settings, sha: None)
    assert resource.unavailable_reason() is None
    reset_shared_breakers()


def test_unavailable_reason_against_a_closed_port(tiny_model_dir: Path) -> None:
    reset_shared_breakers()
    resource = TritonInferenceResource(
        url="127.0.0.1:9",
        model_name="m",
        model_dir=str(tiny_model_dir),
        fallback_enabled=False,
        probe_timeout_s=2.0,
    )
    reason = resource.unavailable_reason()
    assert reason is not None and "UNAVAILABLE" in reason
    reset_shared_breakers()


def _server_error(status: str, message: str = "boom") -> Exception:
    from tritonclient.utils import InferenceServerException

    return InferenceServerException(message, status=status)


@pytest.mark.parametrize(
    ("exc", "retryable", "request_fault"),
    [
        (_server_error("StatusCode.UNAVAILABLE"), True, False),
        (_server_error("StatusCode.RESOURCE_EXHAUSTED"), True, False),
        (_server_error("StatusCode.DEADLINE_EXCEEDED"), False, False),
        (_server_error("StatusCode.INTERNAL"), False, False),
        (_server_error("StatusCode.INVALID_ARGUMENT"), False, True),
        (_server_error("503"), True, False),
        (_server_error("400"), False, True),
        (ConnectionRefusedError(111, "Connection refused"), True, False),
        (TimeoutError("timed out"), False, False),
    ],
)
def test_triton_error_classification(exc, retryable: bool, request_fault: bool) -> None:
    from asr_assets.inference.triton import describe, is_request_fault, is_retryable

    assert is_retryable(exc) is retryable
    assert is_request_fault(exc) is request_fault
    assert describe(exc)


class ScriptedTransport:
    """A Triton transport whose infer calls raise the scripted errors, then answer."""

    script: ClassVar[list[Exception]] = []
    calls = 0

    def __init__(self, settings, timeout_s: float) -> None:
        self.settings = settings

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        return True

    def model_ready(self) -> bool:
        return True

    def model_config(self) -> dict:
        return {
            "max_batch_size": 4,
            "input": [{"name": "input_values"}, {"name": "input_lengths"}],
            "output": [{"name": "log_probs"}, {"name": "output_lengths"}],
            "parameters": {
                "model_sha256": {"string_value": MODEL.sha256},
                "frame_stride_samples": {"string_value": "320"},
            },
        }

    def infer(self, values: np.ndarray, lengths: np.ndarray):
        type(self).calls += 1
        if type(self).script:
            raise type(self).script.pop(0)
        frames = lengths // 320
        return np.zeros((values.shape[0], int(frames.max()), 28), np.float32), frames

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("script", "calls", "raises"),
    [
        ([], 1, None),
        (["StatusCode.UNAVAILABLE"], 2, None),
        (["StatusCode.UNAVAILABLE"] * 5, 3, TritonUnavailableError),
        (["StatusCode.DEADLINE_EXCEEDED"], 1, TritonUnavailableError),
        (["StatusCode.INVALID_ARGUMENT"], 1, TritonRequestError),
    ],
)
def test_only_transport_errors_are_retried(
    monkeypatch: pytest.MonkeyPatch, script, calls: int, raises
) -> None:
    from asr_assets.inference.triton import TritonInferenceEngine, TritonSettings

    monkeypatch.setenv("ASR_RETRY_TRITON_INITIAL_S", "0")
    monkeypatch.setenv("ASR_RETRY_TRITON_MAX_S", "0")
    ScriptedTransport.script = [_server_error(status) for status in script]
    ScriptedTransport.calls = 0
    engine = TritonInferenceEngine(
        TritonSettings(url="fake:1", model_name="m", request_batch_size=8),
        model=MODEL,
        vocabulary=VOCABULARY,
        transport_factory=ScriptedTransport,
    )
    try:
        if raises is None:
            (out,) = engine.infer([np.zeros(16_000, np.float32)])
            assert out.num_frames == 50 and out.frame_duration_s == pytest.approx(0.02)
        else:
            with pytest.raises(raises):
                engine.infer([np.zeros(16_000, np.float32)])
        assert ScriptedTransport.calls == calls
    finally:
        engine.close()


def test_requests_are_bucketed_and_capped_by_the_served_batch_size() -> None:
    from asr_assets.inference.triton import TritonInferenceEngine, TritonSettings

    shapes: list[tuple[int, int]] = []

    class Recording(ScriptedTransport):
        def infer(self, values: np.ndarray, lengths: np.ndarray):
            shapes.append(values.shape)
            return super().infer(values, lengths)

    Recording.script = []
    engine = TritonInferenceEngine(
        TritonSettings(url="fake:1", model_name="m", request_batch_size=8, max_in_flight=2),
        model=MODEL,
        vocabulary=VOCABULARY,
        transport_factory=Recording,
    )
    lengths = [8_000, 12_000, 20_000, 30_000, 31_000, 9_000, 15_000, 16_000, 40_000]
    try:
        outputs = engine.infer([np.zeros(n, np.float32) for n in lengths])
    finally:
        engine.close()
    # Results come back in the caller's order, whatever request carried them.
    assert [o.num_frames for o in outputs] == [n // 320 for n in lengths]
    assert all(rows <= 4 for rows, _ in shapes)  # the served max_batch_size (4) caps requests
    assert {width for _, width in shapes} == {16_000, 32_000, 48_000}
