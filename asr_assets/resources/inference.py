"""The inference resource: hands a ready engine to the transcripts stage."""

from __future__ import annotations

import hashlib
import threading
from abc import abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field, model_validator

from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.scoring import Calibration
from asr_assets.inference.base import InferenceEngine
from asr_assets.inference.model_dir import CHECKSUM_FILE, read_calibration, read_vocabulary
from asr_assets.observability.logging import get_logger, in_current_context

if TYPE_CHECKING:
    from asr_assets.inference.triton import TritonSettings
    from asr_assets.reliability.breaker import CircuitBreaker

log = get_logger(__name__)

LocalBackend = Literal["torch", "onnx"]
# Local CPU batching limits: the local resource's defaults, and what Triton's fallback uses.
# Padded seconds (None: sized to the model by the engine) bind for large models; for small ones
# 16 clips measured faster than 64 (demo model: 3.15 s vs 3.9 s for 400 phrases).
LOCAL_MAX_BATCH_SIZE = 16
LOCAL_MAX_BATCH_SECONDS: float | None = None


class InferenceResource(dg.ConfigurableResource):
    """Opens an engine for the duration of one stage; engines are costly, so one per run."""

    @abstractmethod
    @contextmanager
    def open_engine(self) -> Iterator[InferenceEngine]: ...

    @abstractmethod
    def vocabulary(self) -> CtcVocabulary:
        """The model's tokens, for alignment; cheap (no weights are loaded)."""

    def calibration(self) -> tuple[Calibration, Calibration] | None:
        """The model's (letter, insertion) calibration from its directory, if it ships one."""
        model_dir = getattr(self, "model_dir", None)
        return read_calibration(Path(model_dir)) if model_dir else None

    def unavailable_reason(self) -> str | None:
        """None when a run could use inference now; else why not (sensors skip with it)."""
        return None


def open_local_engine(
    model_dir: str,
    *,
    backend: LocalBackend,
    quantize_int8: bool,
    onnx_path: str | None,
    onnx_cache_dir: str | None,
    num_threads: int | None,
    max_batch_size: int,
    max_batch_seconds: float | None,
    torch_bf16: bool = False,
) -> InferenceEngine:
    """The local engine for a backend; shared by the local resource and Triton's fallback."""
    if backend == "onnx":
        from asr_assets.inference.onnx import LocalOnnxEngine

        return LocalOnnxEngine(
            Path(model_dir),
            onnx_path=Path(onnx_path) if onnx_path else None,
            int8=quantize_int8,
            cache_dir=Path(onnx_cache_dir) if onnx_cache_dir else None,
            num_threads=num_threads,
            max_batch_size=max_batch_size,
            max_batch_seconds=max_batch_seconds,
        )
    from asr_assets.inference.local import LocalTorchEngine

    return LocalTorchEngine(
        Path(model_dir),
        num_threads=num_threads,
        max_batch_size=max_batch_size,
        max_batch_seconds=max_batch_seconds,
        bf16=torch_bf16,
    )


def declared_model_sha256(model_dir: Path) -> str:
    """The model hash as the model contract defines it (sha256 of SHA256SUMS), without hashing
    the weights: cheap enough for a sensor tick. Runs still verify every file before scoring."""
    return hashlib.sha256((model_dir / CHECKSUM_FILE).read_bytes()).hexdigest()


class LocalInferenceResource(InferenceResource):
    """This machine's CPU, from a verified model directory (ASR_MODEL_DIR): torch or ONNX Runtime.

    `backend: onnx` exports the model to ONNX on first use (cached per model hash in
    `onnx_cache_dir`) unless `onnx_path` names an export; `quantize_int8` runs its dynamically
    quantized twin instead (ONNX only).
    """

    model_dir: str = Field(description="Hugging Face CTC model directory with SHA256SUMS.")
    backend: LocalBackend = Field(default="torch", description="torch or onnx (ONNX Runtime).")
    quantize_int8: bool = Field(
        default=False, description="ONNX only: dynamic int8 quantization of the weights."
    )
    torch_bf16: bool = Field(
        default=False,
        description="torch only: bf16 autocast of the forward pass (CPUs with bf16 support).",
    )
    onnx_path: str | None = Field(
        default=None, description="ONNX only: an export to use instead of exporting on demand."
    )
    onnx_cache_dir: str | None = Field(
        default=None, description="ONNX only: where on-demand exports are kept (default: tmp)."
    )
    num_threads: int | None = Field(default=None, description="intra-op threads.")
    max_batch_size: int = Field(default=LOCAL_MAX_BATCH_SIZE, ge=1, le=256)
    max_batch_seconds: float | None = Field(
        default=LOCAL_MAX_BATCH_SECONDS,
        gt=0,
        description="Padded audio seconds per batch (bounds memory and wasted compute); "
        "unset: sized to the model (120 s for the demo model, ~8 s for wav2vec2-base).",
    )

    @model_validator(mode="after")
    def _quantization_needs_onnx(self) -> LocalInferenceResource:
        if self.quantize_int8 and self.backend != "onnx":
            raise ValueError("quantize_int8 applies to backend 'onnx' only")
        if self.torch_bf16 and self.backend != "torch":
            raise ValueError("torch_bf16 applies to backend 'torch' only")
        return self

    def vocabulary(self) -> CtcVocabulary:
        return read_vocabulary(Path(self.model_dir))

    def _engine_settings(self) -> tuple[object, ...]:
        """What makes two engines interchangeable: a prewarmed one serves the same settings.

        Every config field, read off the model, so a field added later cannot be forgotten.
        """
        return tuple((name, getattr(self, name)) for name in sorted(type(self).model_fields))

    def _load_engine(self) -> InferenceEngine:
        return open_local_engine(
            self.model_dir,
            backend=self.backend,
            quantize_int8=self.quantize_int8,
            onnx_path=self.onnx_path,
            onnx_cache_dir=self.onnx_cache_dir,
            num_threads=self.num_threads,
            max_batch_size=self.max_batch_size,
            max_batch_seconds=self.max_batch_seconds,
            torch_bf16=self.torch_bf16,
        )

    def prewarm(self) -> None:
        """Start loading the engine on a background thread of this process.

        Verifying the weights and building the session (1 s for a base-sized ONNX model, ~6 s
        for torch) then overlaps run creation and the catalog and audio stages instead of
        following them. The next `open_engine` in this process with the same settings takes the
        engine; only an in-process run benefits, so the caller decides (`asr score` does).
        """
        key = self._engine_settings()
        with _PREWARM_LOCK:
            if key in _PREWARMED:
                return
            future: Future[InferenceEngine] = Future()
            _PREWARMED[key] = future

        def load() -> None:
            try:
                future.set_result(self._load_engine())
            except BaseException as exc:  # noqa: BLE001 - handed to open_engine, raised in the stage
                future.set_exception(exc)

        threading.Thread(
            target=in_current_context(load), name="engine-prewarm", daemon=True
        ).start()

    @contextmanager
    def open_engine(self) -> Iterator[InferenceEngine]:
        with _PREWARM_LOCK:
            prewarmed = _PREWARMED.pop(self._engine_settings(), None)
        engine: InferenceEngine | None = None
        if prewarmed is not None:
            try:
                engine = prewarmed.result()
            except Exception as exc:  # noqa: BLE001 - loaded again below: the stage raises it
                log.warning("engine_prewarm_failed", error=type(exc).__name__)
        if engine is None:
            engine = self._load_engine()
        try:
            yield engine
        finally:
            engine.close()


#: Engines being loaded ahead of the run that will open them, by `_engine_settings()`.
_PREWARMED: dict[tuple[object, ...], Future[InferenceEngine]] = {}
_PREWARM_LOCK = threading.Lock()


def discard_prewarmed_engines() -> int:
    """Close engines prewarmed but never opened (a run that failed before `transcripts`).

    Waits for loads still running, so no thread is left building a session; returns how many
    engines were closed.
    """
    with _PREWARM_LOCK:
        futures = list(_PREWARMED.values())
        _PREWARMED.clear()
    closed = 0
    for future in futures:
        try:
            engine = future.result()
        except Exception as exc:  # noqa: BLE001 - nothing to close; the run reported its own
            log.info("prewarmed_engine_never_loaded", error=type(exc).__name__)
            continue
        engine.close()
        closed += 1
    return closed


class TritonInferenceResource(InferenceResource):
    """Triton Inference Server (the `aws` environment), behind a circuit breaker.

    `model_dir` is the same model as the one Triton serves (its hash must equal the served
    config's `model_sha256`): it supplies the vocabulary, the model identity recorded in every
    row, and the local fallback engine used while the breaker is open. With `fallback_enabled`
    off, an unavailable server fails the stage, and `unavailable_reason()` reports why so the
    new-audio sensor skips instead of launching runs that would fail.
    """

    url: str = Field(description="host:port of Triton's gRPC (default) or HTTP endpoint.")
    model_name: str = Field(description="Model name in Triton's repository.")
    model_version: str = Field(default="", description="Model version; empty for the latest.")
    protocol: Literal["grpc", "http"] = Field(default="grpc")
    model_dir: str = Field(description="Local copy of the served model (vocabulary, fallback).")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Deadline per request.")
    probe_timeout_s: float = Field(default=5.0, gt=0, description="Deadline per health call.")
    max_in_flight: int = Field(default=4, ge=1, le=64, description="Concurrent requests.")
    request_batch_size: int = Field(default=8, ge=1, le=256, description="Clips per request.")
    bucket_seconds: list[float] = Field(
        default=[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0],
        description="Padded lengths (s): requests of one bucket can share a server batch.",
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Clips the stage hands the engine at once."
    )
    max_batch_seconds: float = Field(default=480.0, gt=0)
    failure_threshold: int = Field(default=3, ge=1, description="Failed batches to open.")
    cool_down_s: float = Field(default=30.0, ge=0, description="Open time before a trial.")
    fallback_enabled: bool = Field(default=True, description="Score locally while open.")
    fallback_backend: LocalBackend = Field(default="torch")
    fallback_num_threads: int | None = Field(default=None)
    tls: bool = Field(default=False, description="TLS to Triton (ASR_TRITON_TLS).")
    tls_ca_file: str | None = Field(default=None, description="CA bundle (ASR_TRITON_TLS_CA).")
    tls_client_cert_file: str | None = Field(default=None, description="mTLS client certificate.")
    tls_client_key_file: str | None = Field(default=None, description="mTLS client key.")

    def vocabulary(self) -> CtcVocabulary:
        return read_vocabulary(Path(self.model_dir))

    def _settings(self) -> TritonSettings:
        from asr_assets.inference.triton import TritonProtocol, TritonSettings

        return TritonSettings(
            url=self.url,
            model_name=self.model_name,
            model_version=self.model_version,
            protocol=TritonProtocol(self.protocol),
            request_timeout_s=self.request_timeout_s,
            probe_timeout_s=self.probe_timeout_s,
            max_in_flight=self.max_in_flight,
            request_batch_size=self.request_batch_size,
            bucket_seconds=tuple(self.bucket_seconds),
            max_batch_size=self.max_batch_size,
            max_batch_seconds=self.max_batch_seconds,
            tls=self.tls,
            tls_ca_file=self.tls_ca_file,
            tls_client_cert_file=self.tls_client_cert_file,
            tls_client_key_file=self.tls_client_key_file,
        )

    def breaker(self) -> CircuitBreaker:
        """This process's breaker for this server and model."""
        from asr_assets.reliability.breaker import BreakerSettings, shared_breaker

        return shared_breaker(
            f"triton:{self.url}/{self.model_name}",
            BreakerSettings(failure_threshold=self.failure_threshold, cool_down_s=self.cool_down_s),
        )

    def unavailable_reason(self) -> str | None:
        """With fallback on, runs can always proceed (locally); with it off, why they cannot.

        An open breaker answers without touching the network; otherwise a readiness probe
        decides, and a failed probe opens the breaker so the next ticks stay cheap.
        """
        if self.fallback_enabled:
            return None
        from asr_assets.inference.triton import TritonUnavailableError, probe
        from asr_assets.reliability.breaker import BreakerState

        breaker = self.breaker()
        if not breaker.allows_call():
            return f"Triton circuit open: {breaker.reason}"
        try:
            expected = declared_model_sha256(Path(self.model_dir))
        except OSError as exc:
            return f"local model directory {self.model_dir} is unreadable: {exc}"
        try:
            probe(self._settings(), expected)
        except TritonUnavailableError as exc:
            breaker.trip(f"readiness probe failed: {exc}")
            return f"Triton circuit open: {breaker.reason}"
        if breaker.state is not BreakerState.CLOSED:
            breaker.reset()
        return None

    @contextmanager
    def open_engine(self) -> Iterator[InferenceEngine]:
        from asr_assets.core.audio import TARGET_SAMPLE_RATE
        from asr_assets.inference.fallback import FallbackInferenceEngine
        from asr_assets.inference.model_dir import model_info, verify_checksums
        from asr_assets.inference.triton import TritonInferenceEngine, TritonRequestError

        model_dir = Path(self.model_dir)
        model = model_info(model_dir, verify_checksums(model_dir))
        vocabulary = read_vocabulary(model_dir)
        settings = self._settings()

        def primary() -> InferenceEngine:
            return TritonInferenceEngine(settings, model=model, vocabulary=vocabulary)

        def local() -> InferenceEngine:
            return open_local_engine(
                self.model_dir,
                backend=self.fallback_backend,
                quantize_int8=False,
                onnx_path=None,
                onnx_cache_dir=None,
                num_threads=self.fallback_num_threads,
                max_batch_size=LOCAL_MAX_BATCH_SIZE,
                max_batch_seconds=LOCAL_MAX_BATCH_SECONDS,
            )

        engine = FallbackInferenceEngine(
            primary_factory=primary,
            local_factory=local,
            breaker=self.breaker(),
            model=model,
            vocabulary=vocabulary,
            fallback_enabled=self.fallback_enabled,
            primary_model=self.model_name,
            request_errors=(TritonRequestError,),
            max_batch_size=self.max_batch_size,
            max_batch_samples=int(self.max_batch_seconds * TARGET_SAMPLE_RATE),
        )
        try:
            yield engine
        finally:
            engine.close()
