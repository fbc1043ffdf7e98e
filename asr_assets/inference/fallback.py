"""A primary engine (Triton) behind a circuit breaker, with the local engine as the fallback.

Why: a partition must keep moving when the GPU service is down, and a dead server must not cost
every remaining batch a timeout. The breaker decides whether the primary is tried at all:

- closed: each batch goes to the primary; a batch it fails (after the transport retries) is
  scored locally at once, so no phrase waits for the breaker; `failure_threshold` consecutive
  failed batches open the breaker;
- a failed readiness probe (when the engine opens, or before a trial batch) opens it at once;
- open: batches go straight to the local engine, which is built on first need;
- after `cool_down_s` the breaker half-opens: the next batch probes readiness and runs on the
  primary; success closes the breaker, failure opens it for another cool-down.

Every switch is logged (WARNING when falling back, with the reason), and every batch records which
engine scored it (`last_engine_names`, one per clip), so the transcripts stage can count phrases
per engine. With fallback switched off, an unavailable primary raises `InferenceUnavailableError`,
which is deliberately not an `InferenceError`: the stage fails with that message instead of
writing an error row per phrase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from asr_assets.core.batching import plan_batches
from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.models import ModelInfo
from asr_assets.inference.base import Emissions, InferenceEngine, InferenceError
from asr_assets.observability.logging import get_logger
from asr_assets.reliability.breaker import BreakerState, CircuitBreaker, CircuitOpenError

log = get_logger(__name__)


class InferenceUnavailableError(RuntimeError):
    """The primary engine cannot serve and fallback is off: the stage fails with this reason."""


class FallbackInferenceEngine:
    """`InferenceEngine` that scores on the primary while it is healthy, else locally."""

    def __init__(
        self,
        *,
        primary_factory: Callable[[], InferenceEngine],
        local_factory: Callable[[], InferenceEngine],
        breaker: CircuitBreaker,
        model: ModelInfo,
        vocabulary: CtcVocabulary,
        fallback_enabled: bool = True,
        primary_name: str = "triton",
        primary_model: str | None = None,
        request_errors: tuple[type[BaseException], ...] = (),
        max_batch_size: int = 32,
        max_batch_samples: int = 16_000 * 480,
    ) -> None:
        self.name = primary_name
        self.triton_model = primary_model
        self.model = model
        self.vocabulary = vocabulary
        self.max_batch_size = max_batch_size
        self.max_batch_samples = max_batch_samples
        self.fallback_enabled = fallback_enabled
        self.last_engine_names: list[str] = []
        self.last_engine_name: str = primary_name
        self._primary_factory = primary_factory
        self._local_factory = local_factory
        self._breaker = breaker
        self._request_errors = request_errors
        self._primary: InferenceEngine | None = None
        self._local: InferenceEngine | None = None
        self._falling_back = False
        self._fallback_reason: str | None = None
        self._fallback_episodes = 0
        self._connect()

    @property
    def device(self) -> str:
        """Where the last batch ran: the primary's name, or the local engine's device."""
        if self._local is not None and self.last_engine_name == self._local.name:
            return str(getattr(self._local, "device", "cpu"))
        return self.name

    # -- opening ------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Probe the primary now, so a dead server is known before the first batch."""
        if not self._breaker.allows_call():
            self._unavailable(self._breaker.reason or "circuit open")
            return
        try:
            self._primary = self._primary_factory()
        except InferenceError as exc:
            self._breaker.trip(f"readiness probe failed: {exc}")
            self._unavailable(self._breaker.reason or str(exc))
            return
        if self._breaker.state is not BreakerState.CLOSED:
            self._breaker.reset()

    def _unavailable(self, reason: str) -> None:
        if not self.fallback_enabled:
            raise InferenceUnavailableError(
                f"{self.name} is unavailable and fallback is switched off: {reason}"
            )
        self._start_fallback(reason)

    # -- scoring ------------------------------------------------------------------------------

    def infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if not clips:
            self.last_engine_names = []
            return []
        if self._breaker.allows_call():
            try:
                outputs, refused = self._breaker.call(self._primary_attempt, clips)
            except CircuitOpenError as exc:
                self._unavailable(exc.reason or str(exc))
            except InferenceError as exc:
                reason = self._breaker.reason or f"batch failed: {exc}"
                if not self.fallback_enabled:
                    raise InferenceUnavailableError(
                        f"{self.name} failed and fallback is switched off: {exc}"
                    ) from exc
                self._start_fallback(reason)
            else:
                if refused is not None:
                    # The server answered but refused this batch: not an outage, but the
                    # phrases still deserve a score if another engine can give one.
                    if not self.fallback_enabled:
                        raise refused
                    log.warning("primary_refused_batch", engine=self.name, reason=str(refused))
                    return self._local_infer(clips)
                self._stop_fallback()
                self._attribute(self.name, len(clips))
                return outputs
        else:
            self._unavailable(self._breaker.reason or "circuit open")
        return self._local_infer(clips)

    def _primary_attempt(
        self, clips: Sequence[np.ndarray]
    ) -> tuple[list[Emissions], BaseException | None]:
        """Run on the primary; a refused request is returned, not raised, because the server
        answered: the breaker must count it as a sign of health, not of an outage."""
        try:
            return self._primary_infer(clips), None
        except self._request_errors as exc:
            return [], exc

    def _primary_infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if self._primary is None:
            self._primary = self._primary_factory()
        elif self._breaker.state is BreakerState.HALF_OPEN:
            check_ready = getattr(self._primary, "check_ready", None)
            if check_ready is not None:
                check_ready()
        return self._primary.infer(clips)

    def _local_infer(self, clips: Sequence[np.ndarray]) -> list[Emissions]:
        if self._local is None:
            self._local = self._local_factory()
        local = self._local
        # Batches were planned to the primary's limits; the local engine has its own.
        plans = plan_batches(
            [int(np.asarray(clip).size) for clip in clips],
            max_batch_size=local.max_batch_size,
            max_batch_samples=local.max_batch_samples,
        )
        results: list[Emissions | None] = [None] * len(clips)
        for plan in plans:
            for index, emissions in zip(
                plan.indices, local.infer([clips[i] for i in plan.indices]), strict=True
            ):
                results[index] = emissions
        self._attribute(local.name, len(clips))
        return [emissions for emissions in results if emissions is not None]

    def _attribute(self, engine_name: str, count: int) -> None:
        self.last_engine_name = engine_name
        self.last_engine_names = [engine_name] * count

    # -- switching ----------------------------------------------------------------------------

    def _start_fallback(self, reason: str) -> None:
        if self._falling_back and reason == self._fallback_reason:
            return
        if not self._falling_back:
            self._fallback_episodes += 1
        self._falling_back = True
        self._fallback_reason = reason
        log.warning(
            "inference_fallback",
            status="fallback",
            primary=self.name,
            reason=reason,
            breaker_state=self._breaker.state.value,
            retry_after_s=round(self._breaker.retry_after_s(), 1),
        )

    def _stop_fallback(self) -> None:
        if self._falling_back:
            log.info("inference_primary_restored", primary=self.name, reason=self._fallback_reason)
        self._falling_back = False

    def fallback_report(self) -> dict[str, object]:
        """For the asset's metadata: did this run fall back, why, and where the breaker is."""
        return {
            "primary": self.name,
            "fallback_enabled": self.fallback_enabled,
            "fell_back": self._fallback_episodes > 0,
            "fallback_episodes": self._fallback_episodes,
            "last_fallback_reason": self._fallback_reason,
            "breaker_state": self._breaker.state.value,
        }

    def close(self) -> None:
        for engine in (self._primary, self._local):
            if engine is not None:
                engine.close()
        self._primary = None
        self._local = None
