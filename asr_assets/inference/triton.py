"""Inference on Triton Inference Server through tritonclient (gRPC by default, HTTP as an option).

The server runs the graph exported by `tools/export` (see `inference/onnx.py` for its contract),
so this engine sends raw waveforms plus lengths and gets log-probabilities plus real frame counts.

What the engine adds around a plain client:
- readiness before use: the server must be live and ready, the model ready, its inputs and outputs
  the export contract's, and its `model_sha256` parameter the hash of the local model directory:
  a run never mixes rows from two models under one name;
- bucketed requests: clips are grouped and zero-padded to a few fixed lengths, because Triton's
  dynamic batcher only merges requests whose shapes agree; requests from many runs then share
  GPU batches;
- a bounded number of requests in flight (a thread pool; each worker owns its client, because
  tritonclient clients are not thread-safe), each with its own deadline, which is also sent to
  the server so it drops queued work nobody waits for;
- retries only for transport errors (unavailable, connection refused/reset) through the shared
  TRITON retry policy; a timeout is not retried (it would add load to a slow server) and a
  rejected request is the request's fault, not the server's;
- a rate limit: every request attempt takes a token from the process's Triton bucket
  (`ASR_RATE_TRITON_PER_S` / `ASR_RATE_TRITON_BURST`), so a runaway loop or retry storm
  cannot flood a server other teams share.

Errors are split for the circuit breaker (`inference/fallback.py`): `TritonUnavailableError` says
the server cannot serve (counts towards opening the breaker), `TritonRequestError` says it refused
this request (does not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from asr_assets.core.audio import TARGET_SAMPLE_RATE
from asr_assets.core.batching import plan_batches
from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.models import ModelInfo
from asr_assets.inference.base import Emissions, InferenceError
from asr_assets.inference.onnx import (
    INPUT_LENGTHS,
    INPUT_VALUES,
    META_FRAME_STRIDE,
    META_MODEL_SHA256,
    OUTPUT_LENGTHS,
    OUTPUT_LOG_PROBS,
    emissions_from_outputs,
    pad_batch,
)
from asr_assets.observability.logging import get_logger, in_current_context
from asr_assets.observability.otel_metrics import dependency_call
from asr_assets.observability.tracing import span
from asr_assets.reliability.rate_limit import shared_bucket
from asr_assets.reliability.retry import Dependency, retrying

log = get_logger(__name__)

ENGINE_NAME = "triton"
DEFAULT_BUCKET_SECONDS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
_RETRYABLE_GRPC = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"}
_REQUEST_GRPC = {"StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE"}
_RETRYABLE_HTTP = {"502", "503", "504"}
_REQUEST_HTTP = {"400", "413"}
_UNBOUNDED = 2**62


class TritonProtocol(StrEnum):
    GRPC = "grpc"
    HTTP = "http"


class TritonError(InferenceError):
    """Triton could not produce emissions for a batch."""


class TritonUnavailableError(TritonError):
    """The server or model cannot serve now: unreachable, not ready, too slow, or wrong model."""


class TritonRequestError(TritonError):
    """The server refused this request (bad shape or type): its fault, not the server's."""


@dataclass(frozen=True)
class TritonSettings:
    """How to reach the model and how hard to push it."""

    url: str
    model_name: str
    model_version: str = ""
    protocol: TritonProtocol = TritonProtocol.GRPC
    request_timeout_s: float = 30.0
    probe_timeout_s: float = 5.0
    max_in_flight: int = 4
    request_batch_size: int = 8
    bucket_seconds: tuple[float, ...] = DEFAULT_BUCKET_SECONDS
    max_batch_size: int = 32
    max_batch_seconds: float = 480.0
    # TLS to Triton (docs/privacy.md: children's audio crosses the network here). The CA file
    # verifies the server; the client certificate and key are for mutual TLS.
    tls: bool = False
    tls_ca_file: str | None = None
    tls_client_cert_file: str | None = None
    tls_client_key_file: str | None = None

    def tls_client_kwargs(self) -> dict[str, Any]:
        """tritonclient's own TLS options for this protocol (empty without TLS)."""
        if not self.tls:
            return {}
        if self.protocol is TritonProtocol.GRPC:
            return {
                "ssl": True,
                "root_certificates": self.tls_ca_file,
                "private_key": self.tls_client_key_file,
                "certificate_chain": self.tls_client_cert_file,
            }
        options = {
            name: value
            for name, value in (
                ("ca_certs", self.tls_ca_file),
                ("certfile", self.tls_client_cert_file),
                ("keyfile", self.tls_client_key_file),
            )
            if value
        }
        return {"ssl": True, "ssl_options": options}

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.request_batch_size < 1:
            raise ValueError("max_in_flight and request_batch_size must be at least 1")
        if not self.bucket_seconds or list(self.bucket_seconds) != sorted(self.bucket_seconds):
            raise ValueError("bucket_seconds must be a non-empty ascending list")
        if self.request_timeout_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def bucket_samples(self) -> list[int]:
        return [round(seconds * TARGET_SAMPLE_RATE) for seconds in self.bucket_seconds]

    @property
    def target(self) -> str:
        version = self.model_version or "latest"
        return f"{self.protocol.value}://{self.url}/{self.model_name}@{version}"


def error_status(exc: BaseException) -> str | None:
    """Triton's status for an exception (`StatusCode.X` on gRPC, an HTTP code), if it has one."""
    status = getattr(exc, "status", None)
    if callable(status):
        value = status()
        return str(value) if value is not None else None
    return None


def is_retryable(exc: BaseException) -> bool:
    """Transport failures a second attempt can cure; never timeouts or refused requests."""
    if isinstance(exc, TimeoutError):
        return False
    if isinstance(exc, ConnectionError):
        return True
    status = error_status(exc)
    return status in _RETRYABLE_GRPC or status in _RETRYABLE_HTTP


def is_request_fault(exc: BaseException) -> bool:
    status = error_status(exc)
    return status in _REQUEST_GRPC or status in _REQUEST_HTTP


def describe(exc: BaseException) -> str:
    """A one-line reason: the Triton status and message, or the exception's type and text."""
    status = error_status(exc)
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    prefix = status or type(exc).__name__
    return f"{prefix}: {text}".strip().rstrip(":")


class _Transport:
    """One tritonclient client of either protocol behind the few calls the engine makes."""

    def __init__(self, settings: TritonSettings, timeout_s: float) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._grpc = settings.protocol is TritonProtocol.GRPC
        if self._grpc:
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self._module: Any = client_module
        tls = settings.tls_client_kwargs()
        if self._grpc:
            self._client: Any = client_module.InferenceServerClient(url=settings.url, **tls)
        else:
            self._client = client_module.InferenceServerClient(
                url=settings.url,
                connection_timeout=timeout_s,
                network_timeout=timeout_s,
                **tls,
            )

    def _timeout_kwargs(self) -> dict[str, float]:
        return {"client_timeout": self._timeout_s} if self._grpc else {}

    def server_live(self) -> bool:
        return bool(self._client.is_server_live(**self._timeout_kwargs()))

    def server_ready(self) -> bool:
        return bool(self._client.is_server_ready(**self._timeout_kwargs()))

    def model_ready(self) -> bool:
        return bool(
            self._client.is_model_ready(
                self._settings.model_name, self._settings.model_version, **self._timeout_kwargs()
            )
        )

    def repository_state(self) -> str | None:
        """The model's state in the repository index (READY, UNAVAILABLE, ...), None if absent."""
        if self._grpc:
            index = self._client.get_model_repository_index(
                as_json=True, **self._timeout_kwargs()
            ).get("models", [])
        else:
            index = self._client.get_model_repository_index()
        for entry in index:
            if entry.get("name") == self._settings.model_name:
                return str(entry.get("state") or "UNKNOWN")
        return None

    def model_config(self) -> dict[str, Any]:
        if self._grpc:
            response = self._client.get_model_config(
                self._settings.model_name,
                self._settings.model_version,
                as_json=True,
                **self._timeout_kwargs(),
            )
            return dict(response.get("config", {}))
        return dict(
            self._client.get_model_config(self._settings.model_name, self._settings.model_version)
        )

    def infer(self, values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        module = self._module
        inputs = [
            module.InferInput(INPUT_VALUES, list(values.shape), "FP32"),
            module.InferInput(INPUT_LENGTHS, list(lengths.shape), "INT64"),
        ]
        inputs[0].set_data_from_numpy(values)
        inputs[1].set_data_from_numpy(lengths)
        outputs = [
            module.InferRequestedOutput(OUTPUT_LOG_PROBS),
            module.InferRequestedOutput(OUTPUT_LENGTHS),
        ]
        # The server-side timeout (microseconds) lets Triton drop a request still queued when the
        # client has given up; the config's queue policy allows this override.
        server_timeout_us = int(self._timeout_s * 1_000_000)
        with (
            span(
                "triton.infer",
                {
                    "rpc.system": "grpc" if self._grpc else "http",
                    "server.address": self._settings.url,
                    "asr.triton.model": self._settings.model_name,
                    "asr.triton.model_version": self._settings.model_version or "latest",
                    "asr.batch_size": int(values.shape[0]),
                    "asr.triton.tls": self._settings.tls,
                },
            ),
            dependency_call("triton", "infer", model=self._settings.model_name),
        ):
            # W3C trace context: a Triton started with OpenTelemetry tracing continues the trace.
            from opentelemetry.propagate import inject

            headers: dict[str, str] = {}
            inject(headers)
            result = self._client.infer(
                self._settings.model_name,
                inputs,
                model_version=self._settings.model_version,
                outputs=outputs,
                timeout=server_timeout_us,
                headers=headers or None,
                **self._timeout_kwargs(),
            )
        return result.as_numpy(OUTPUT_LOG_PROBS), result.as_numpy(OUTPUT_LENGTHS)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class ServedModel:
    """What the readiness check learned about the served model."""

    max_batch_size: int
    frame_stride_samples: int
    sha256: str


def _config_parameters(config: dict[str, Any]) -> dict[str, str]:
    parameters = config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in parameters.items()}


def check_model_contract(
    config: dict[str, Any], settings: TritonSettings, expected_sha256: str | None
) -> ServedModel:
    """The served config must speak the export contract and carry the expected model hash."""
    inputs = {tensor.get("name") for tensor in config.get("input", [])}
    outputs = {tensor.get("name") for tensor in config.get("output", [])}
    missing = sorted(
        ({INPUT_VALUES, INPUT_LENGTHS} - inputs) | ({OUTPUT_LOG_PROBS, OUTPUT_LENGTHS} - outputs)
    )
    if missing:
        raise TritonUnavailableError(
            f"{settings.target}: served config lacks tensors {missing} of the export contract"
        )
    parameters = _config_parameters(config)
    served_sha = parameters.get(META_MODEL_SHA256, "")
    if expected_sha256 is not None and served_sha != expected_sha256:
        raise TritonUnavailableError(
            f"{settings.target}: serves model sha256 {served_sha[:12] or '(none)'}, "
            f"expected {expected_sha256[:12]} (the local model directory); deploy the same model"
        )
    stride = int(parameters.get(META_FRAME_STRIDE) or 0)
    if stride <= 0:
        raise TritonUnavailableError(f"{settings.target}: config has no {META_FRAME_STRIDE}")
    return ServedModel(
        max_batch_size=int(config.get("max_batch_size") or 0),
        frame_stride_samples=stride,
        sha256=served_sha,
    )


def probe(
    settings: TritonSettings,
    expected_sha256: str | None,
    transport_factory: Callable[[TritonSettings, float], _Transport] = _Transport,
) -> ServedModel:
    """Readiness probe: server live and ready, model ready and the expected one; else raises
    `TritonUnavailableError` whose message is the reason (shown to operators and sensors)."""
    try:
        transport = transport_factory(settings, settings.probe_timeout_s)
    except Exception as exc:  # client construction validates the URL and may raise anything
        raise TritonUnavailableError(
            f"{settings.target}: cannot create client: {describe(exc)}"
        ) from exc
    try:
        return _probe_with(transport, settings, expected_sha256)
    finally:
        transport.close()


def _probe_with(
    transport: _Transport, settings: TritonSettings, expected_sha256: str | None
) -> ServedModel:
    try:
        if not transport.server_live():
            raise TritonUnavailableError(f"{settings.target}: server is not live")
        # The model before the server: with strict readiness a server is unready exactly when
        # some model is, and the model's state is the useful part of the reason.
        if not transport.model_ready():
            state = transport.repository_state()
            detail = (
                "is not in the server's model repository"
                if state is None
                else f"is not ready (state {state})"
            )
            raise TritonUnavailableError(f"{settings.target}: model {detail}")
        if not transport.server_ready():
            raise TritonUnavailableError(f"{settings.target}: server is not ready")
        config = transport.model_config()
    except TritonUnavailableError:
        raise
    except Exception as exc:  # tritonclient raises its own and raw socket errors alike
        raise TritonUnavailableError(f"{settings.target}: {describe(exc)}") from exc
    return check_model_contract(config, settings, expected_sha256)


class TritonInferenceEngine:
    """The `InferenceEngine` for a Triton-served export of the model; see the module docstring.

    Constructing it runs the readiness probe, so an engine that exists has found the right model
    ready. `model` and `vocabulary` are those of the local model directory the served model was
    checked against.
    """

    name = ENGINE_NAME
    device = "triton"

    def __init__(
        self,
        settings: TritonSettings,
        *,
        model: ModelInfo,
        vocabulary: CtcVocabulary,
        transport_factory: Callable[[TritonSettings, float], _Transport] = _Transport,
    ) -> None:
        started = time.perf_counter()
        self.settings = settings
        self.triton_model = settings.model_name
        self.model = model
        self.vocabulary = vocabulary
        self._transport_factory = transport_factory
        self.served = probe(settings, model.sha256, transport_factory)
        self._request_batch = settings.request_batch_size
        if self.served.max_batch_size:
            self._request_batch = min(self._request_batch, self.served.max_batch_size)
        self._buckets = settings.bucket_samples
        self.max_batch_size = settings.max_batch_size
        self.max_batch_samples = int(settings.max_batch_seconds * TARGET_SAMPLE_RATE)
        self._frame_s = self.served.frame_stride_samples / TARGET_SAMPLE_RATE
        self._local = threading.local()
        self._transports: list[_Transport] = []
        self._transports_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=settings.max_in_flight, thread_name_prefix="triton-request"
        )
        log.info(
            "triton_engine_ready",
            target=settings.target,
            model=model.name,
            model_version=model.version,
            request_batch_size=self._request_batch,
            max_in_flight=settings.max_in_flight,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def check_ready(self) -> None:
        """Probe again (after a cool-down, before trusting the server with a batch)."""
        probe(self.settings, self.model.sha256, self._transport_factory)

    def _transport(self) -> _Transport:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._transport_factory(self.settings, self.settings.request_timeout_s)
            self._local.transport = transport
            with self._transports_lock:
                self._transports.append(transport)
        return transport

    def _request(self, clips: Sequence[np.ndarray], padded_length: int) -> list[Emissions]:
        values, lengths = pad_batch(clips, padded_length)
        started = time.perf_counter()
        bucket = shared_bucket(Dependency.TRITON)
        try:
            transport = self._transport()

            def attempt() -> tuple[np.ndarray, np.ndarray]:
                bucket.acquire()  # per attempt: retries count against the rate too
                return transport.infer(values, lengths)

            log_probs, frames = retrying(Dependency.TRITON, is_retryable)(attempt)
        except Exception as exc:  # classified below; tritonclient and sockets raise many types
            reason = f"{self.settings.target}: request of {len(clips)}x{padded_length} failed: "
            if is_request_fault(exc):
                raise TritonRequestError(reason + describe(exc)) from exc
            raise TritonUnavailableError(reason + describe(exc)) from exc
        log.debug(
            "triton_request",
            clips=len(clips),
            padded_samples=padded_length,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if log_probs is None or frames is None:
            raise TritonUnavailableError(f"{self.settings.target}: response lacks outputs")
        return emissions_from_outputs(log_probs, frames, self._frame_s)

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if not clips:
            return []
        if self._pool is None:
            raise TritonUnavailableError("engine is closed")
        plans = plan_batches(
            [int(np.asarray(clip).size) for clip in clips],
            max_batch_size=self._request_batch,
            max_batch_samples=_UNBOUNDED,  # requests are bounded by count; shapes by bucket
            buckets=self._buckets,
        )
        futures: list[tuple[list[int], Future[list[Emissions]]]] = [
            (
                plan.indices,
                # Request threads log (retries) for the run: they carry its context.
                self._pool.submit(
                    in_current_context(self._request),
                    [clips[i] for i in plan.indices],
                    plan.padded_length,
                ),
            )
            for plan in plans
        ]
        results: list[Emissions | None] = [None] * len(clips)
        try:
            for indices, future in futures:
                for index, emissions in zip(indices, future.result(), strict=True):
                    results[index] = emissions
        except BaseException:
            for _, future in futures:
                future.cancel()
            raise
        complete = [emissions for emissions in results if emissions is not None]
        if len(complete) != len(clips):
            raise TritonUnavailableError(f"{self.settings.target}: responses lost clips")
        return complete

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._transports_lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            # Closing a dead connection must not mask the run's outcome; it is logged.
            try:
                transport.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("triton_client_close_failed", error=describe(exc))
