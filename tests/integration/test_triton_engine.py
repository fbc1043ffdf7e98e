"""TritonInferenceEngine against a real tritonserver on 127.0.0.1 (python-backend twin of the
production model: same name, tensors, dynamic batching and parameters)."""

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from asr_assets.core.decoding import greedy_decode
from asr_assets.inference.fallback import FallbackInferenceEngine, InferenceUnavailableError
from asr_assets.inference.local import LocalTorchEngine
from asr_assets.inference.model_dir import model_info, read_vocabulary, verify_checksums
from asr_assets.inference.onnx import max_abs_difference
from asr_assets.inference.triton import (
    TritonInferenceEngine,
    TritonProtocol,
    TritonSettings,
    TritonUnavailableError,
)
from asr_assets.reliability.breaker import BreakerState, reset_shared_breakers
from asr_assets.resources.inference import TritonInferenceResource
from tests.support.data import tone
from tests.support.models import build_tiny_model
from tests.support.triton_server import (
    ServerControl,
    TritonServer,
    exported_repository,
    free_port,
    running_server,
)

pytestmark = pytest.mark.integration

MODEL = "tiny-random"
# Lengths spread over three buckets (1 s, 2 s, 4 s), so requests are split and padded.
CLIPS = [tone(s, freq=150 + 20 * i) for i, s in enumerate((0.5, 0.9, 1.4, 2.2, 3.1, 0.7, 1.1))]


@pytest.fixture(scope="module")
def triton(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[TritonServer, ServerControl]]:
    repository = exported_repository(
        tiny_model_dir, tmp_path_factory.getbasetemp() / "triton-production-repo", MODEL
    )
    with running_server(repository, MODEL, tmp_path_factory.mktemp("triton")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_breakers() -> Iterator[None]:
    reset_shared_breakers()
    yield
    reset_shared_breakers()


@pytest.fixture(scope="module")
def local_engine(tiny_model_dir: Path) -> LocalTorchEngine:
    return LocalTorchEngine(tiny_model_dir, num_threads=1)


def _settings(url: str, **overrides) -> TritonSettings:
    values = {"url": url, "model_name": MODEL, "request_timeout_s": 20.0, "probe_timeout_s": 5.0}
    return TritonSettings(**{**values, **overrides})


def _engine(model_dir: Path, url: str, **overrides) -> TritonInferenceEngine:
    return TritonInferenceEngine(
        _settings(url, **overrides),
        model=model_info(model_dir, verify_checksums(model_dir)),
        vocabulary=read_vocabulary(model_dir),
    )


def _client(server: TritonServer):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url)


def _state(client) -> str | None:
    index = client.get_model_repository_index(as_json=True).get("models", [])
    return next((m.get("state") for m in index if m.get("name") == MODEL), None)


def _wait(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.parametrize("protocol", [TritonProtocol.GRPC, TritonProtocol.HTTP])
def test_batched_inference_equals_the_local_engine(
    triton, tiny_model_dir: Path, local_engine: LocalTorchEngine, protocol: TritonProtocol
) -> None:
    server, _ = triton
    url = server.grpc_url if protocol is TritonProtocol.GRPC else server.http_url
    engine = _engine(tiny_model_dir, url, protocol=protocol, request_batch_size=2, max_in_flight=3)
    try:
        remote = engine.infer(CLIPS)
    finally:
        engine.close()
    reference = local_engine.infer(CLIPS)
    difference, mismatched = max_abs_difference(reference, remote)
    assert mismatched == 0 and difference < 1e-3
    assert [e.frame_duration_s for e in remote] == [e.frame_duration_s for e in reference]
    vocabulary = local_engine.vocabulary
    assert [greedy_decode(e.log_probs, vocabulary).letters for e in remote] == [
        greedy_decode(e.log_probs, vocabulary).letters for e in reference
    ]


def test_bucketed_requests_are_merged_by_the_dynamic_batcher(triton, tiny_model_dir: Path) -> None:
    """Eight single-clip requests of different lengths, all in the 1 s bucket: while the first
    runs (slowly), the rest queue with one shape and Triton runs them as merged batches."""
    server, control = triton
    client = _client(server)

    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    engine = _engine(tiny_model_dir, server.grpc_url, request_batch_size=1, max_in_flight=8)
    clips = [tone(0.55 + 0.05 * i, freq=200 + 10 * i) for i in range(8)]
    before = counts()
    control.set(delay_s=0.4)
    try:
        outputs = engine.infer(clips)
    finally:
        control.reset()
        engine.close()
        after = counts()
        client.close()
    assert len(outputs) == 8
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 8
    assert executions <= 3, f"{executions} executions for 8 requests: nothing was merged"


def test_readiness_gating_on_a_server_that_is_not_there(tiny_model_dir: Path) -> None:
    with pytest.raises(TritonUnavailableError, match="UNAVAILABLE"):
        _engine(tiny_model_dir, f"127.0.0.1:{free_port()}", probe_timeout_s=2.0)
    with pytest.raises(TritonUnavailableError, match="Connection"):
        _engine(
            tiny_model_dir,
            f"127.0.0.1:{free_port()}",
            protocol=TritonProtocol.HTTP,
            probe_timeout_s=2.0,
        )


def test_wrong_model_name(triton, tiny_model_dir: Path) -> None:
    server, _ = triton
    with pytest.raises(TritonUnavailableError, match="not in the server's model repository"):
        _engine(tiny_model_dir, server.grpc_url, model_name="no-such-model")
    resource = TritonInferenceResource(
        url=server.grpc_url,
        model_name="no-such-model",
        model_dir=str(tiny_model_dir),
        fallback_enabled=False,
    )
    with (
        pytest.raises(InferenceUnavailableError, match=r"fallback is switched off.*no-such-model"),
        resource.open_engine(),
    ):
        pass


def test_a_server_with_another_model_is_refused(
    triton, tiny_model_dir: Path, tmp_path: Path
) -> None:
    server, _ = triton
    other = build_tiny_model(tmp_path / "other", seed=3)
    with pytest.raises(TritonUnavailableError, match="serves model sha256"):
        _engine(other, server.grpc_url)


def test_slower_than_the_timeout(triton, tiny_model_dir: Path, local_engine) -> None:
    server, control = triton
    engine = _engine(tiny_model_dir, server.grpc_url, request_timeout_s=1.0)
    control.set(delay_s=3.0)
    started = time.monotonic()
    try:
        with pytest.raises(TritonUnavailableError, match="DEADLINE_EXCEEDED"):
            engine.infer(CLIPS[:1])
        assert time.monotonic() - started < 2.5  # the deadline, not the server, ended it
        resource = TritonInferenceResource(
            url=server.grpc_url,
            model_name=MODEL,
            model_dir=str(tiny_model_dir),
            request_timeout_s=1.0,
            failure_threshold=1,
        )
        with resource.open_engine() as fallback:
            assert isinstance(fallback, FallbackInferenceEngine)
            (emissions,) = fallback.infer(CLIPS[:1])
            assert fallback.last_engine_name == "local-torch"
            assert resource.breaker().state is BreakerState.OPEN
            assert "DEADLINE_EXCEEDED" in (resource.breaker().reason or "")
        np.testing.assert_allclose(emissions.log_probs, local_engine.infer(CLIPS[:1])[0].log_probs)
    finally:
        control.reset()
        engine.close()
    # Let the delayed batch finish so later tests find an idle server.
    patient = _engine(tiny_model_dir, server.grpc_url, request_timeout_s=30.0)
    patient.infer(CLIPS[:1])
    patient.close()


def test_model_not_ready_then_ready_again(triton, tiny_model_dir: Path, caplog) -> None:
    """Readiness gating end to end: while the model is unloaded the engine refuses it, the
    resource reports why (fallback off) or scores locally (fallback on); once the model is back
    and the cool-down has passed, the half-open trial probes readiness and Triton takes over."""
    server, _ = triton
    client = _client(server)
    common = {"url": server.grpc_url, "model_name": MODEL, "model_dir": str(tiny_model_dir)}
    client.unload_model(MODEL)
    try:
        _wait(lambda: _state(client) == "UNAVAILABLE")
        with pytest.raises(TritonUnavailableError, match="not ready"):
            _engine(tiny_model_dir, server.grpc_url)
        strict = TritonInferenceResource(**common, fallback_enabled=False, cool_down_s=0.5)
        reason = strict.unavailable_reason()
        assert reason is not None and "not ready (state UNAVAILABLE)" in reason
        with pytest.raises(InferenceUnavailableError, match="not ready"), strict.open_engine():
            pass
        # Same server and breaker settings: the same (process-wide) breaker, already open.
        tolerant = TritonInferenceResource(**common, cool_down_s=0.5)
        assert tolerant.breaker() is strict.breaker()
        with tolerant.open_engine() as engine:
            engine.infer(CLIPS[:2])
            assert engine.last_engine_names == ["local-torch", "local-torch"]
            assert any("inference_fallback" in r.getMessage() for r in caplog.records)
            client.load_model(MODEL)
            _wait(lambda: client.is_model_ready(MODEL))
            time.sleep(0.6)
            engine.infer(CLIPS[:2])
            assert engine.last_engine_names == ["triton", "triton"]
            assert tolerant.breaker().state is BreakerState.CLOSED
        assert strict.unavailable_reason() is None
    finally:
        if not client.is_model_ready(MODEL):
            client.load_model(MODEL)
        client.close()
