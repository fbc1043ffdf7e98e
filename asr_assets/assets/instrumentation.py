"""How every stage reports itself: log context, spans, metrics, and which failures to retry.

Each asset runs its work inside `stage_scope` (once per run) and `partition_scope` (once per
partition of the run). Together they:
- bind the log schema's run context (`correlation_id` = run id, `stage`, `partition`) for every
  record made inside, including in worker threads that use `in_current_context`;
- open the spans `asr.stage` (in the run's trace, whose id is the run id: see
  `observability/tracing.py`) and `asr.partition` (attributes: stage, partition, run id, phrase
  counts, activity count, model, device);
- log INFO `stage_started` / `stage_finished` / `partition_finished` with `latency_ms`, and ERROR
  `stage_failed` with the stack;
- emit the stage's EMF record per partition (phrases in/ok/errored, latency, retries by
  dependency, phrases by engine), when metrics are configured;
- turn failures that a step retry cannot cure (a stage that lost phrases, a full disk, an unsafe
  key, inference down with fallback off, an Athena query past its timeout) into
  `dg.Failure(allow_retries=False)`, so the assets' `RetryPolicy` spends its attempts only on
  transient ones (store or catalog unreachable after the client-level retries).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pyarrow as pa
import structlog

from asr_assets.assets.common import (
    ReconciliationError,
    StageSummary,
    load_sensitive_digests,
    partition_metadata,
)
from asr_assets.core.errors import ReasonCode, Stage
from asr_assets.core.storage import UnsafeKeyError
from asr_assets.inference.fallback import InferenceUnavailableError
from asr_assets.inference.memory import release_freed_memory
from asr_assets.inference.model_dir import ModelIntegrityError
from asr_assets.observability.logging import get_logger, run_context
from asr_assets.observability.metrics import emit_slo_signal, emit_stage, emit_stage_failure
from asr_assets.observability.tracing import run_parent_context, span
from asr_assets.reliability.retry import retry_counts
from asr_assets.resources.athena import AthenaQueryTimeoutError
from asr_assets.resources.object_store import CommitConflictError, InsufficientSpaceError
from asr_assets.resources.preflight import is_permission_error
from asr_assets.resources.publisher import AppSyncConfigError

log = get_logger(__name__)

#: Failures a step retry cannot cure: retrying them only delays the alert.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ReconciliationError,
    InsufficientSpaceError,
    UnsafeKeyError,
    InferenceUnavailableError,
    AthenaQueryTimeoutError,
    AppSyncConfigError,
    CommitConflictError,  # a newer run committed the partition: this run's result is stale
    ModelIntegrityError,
)


def failure_reason(exc: BaseException | None) -> str:
    """A stage failure's reason code: the phrase reason code when there is one, else the
    exception's class in snake case (`reconciliation_error`, `store_unavailable_error`)."""
    while isinstance(exc, dg.Failure) and exc.__cause__ is not None:
        exc = exc.__cause__
    if exc is None:
        return "unknown"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, ReasonCode):
        return reason.value
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _emit_queue_age(context: dg.AssetExecutionContext, partitions: list[str]) -> None:
    """How long the run waited in the queue: the queue-age SLO's signal, once per run."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    if record is None or record.start_time is None:
        return
    age_s = max(0.0, record.start_time - record.create_timestamp.timestamp())
    emit_slo_signal(
        "QueueAgeS",
        age_s,
        stage=Stage.ACTIVITIES.value,
        partition=",".join(partitions),
        correlation_id=context.run.run_id,
    )


def partition_freshness_s(partition_key: str, now: float) -> float:
    """Seconds between the end of the partition's UTC day and now (publish time)."""
    day_end = datetime.combine(
        date.fromisoformat(partition_key) + timedelta(days=1), datetime.min.time(), tzinfo=UTC
    )
    return now - day_end.timestamp()


def _retry_delta(before: dict[str, int]) -> dict[str, int]:
    after = retry_counts()
    return {dep: n - before.get(dep, 0) for dep, n in after.items() if n - before.get(dep, 0)}


@dataclass
class PartitionRecord:
    """What a partition's work tells the scope: its summary and, when known, model and device."""

    summary: StageSummary | None = None
    model: str | None = None
    device: str | None = None
    attributes: dict[str, object] = field(default_factory=dict)


@contextmanager
def stage_scope(
    context: dg.AssetExecutionContext,
    stage: Stage,
    *,
    permanent: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """The whole asset body: run context, the stage span, start/finish/failure records."""
    run_id = context.run.run_id
    partitions = list(context.partition_keys)
    started = time.perf_counter()
    with (
        run_context(correlation_id=run_id, stage=stage.value),
        span(
            "asr.stage",
            {
                "asr.stage": stage.value,
                "asr.correlation_id": run_id,
                "asr.partition_count": len(partitions),
                "asr.partitions": ",".join(partitions),
            },
            context=run_parent_context(run_id),
        ),
    ):
        log.info("stage_started", status="started", partitions=partitions)
        if stage is Stage.ACTIVITIES:
            _emit_queue_age(context, partitions)

        def failed(**fields: object) -> None:
            latency_ms = (time.perf_counter() - started) * 1000
            log.error(
                "stage_failed", status="failed", latency_ms=latency_ms, exc_info=True, **fields
            )
            emit_stage_failure(
                stage=stage.value,
                correlation_id=run_id,
                partitions=partitions,
                reason=failure_reason(sys.exc_info()[1]),
                retryable=fields.get("retryable"),  # type: ignore[arg-type]
                latency_ms=latency_ms,
            )

        try:
            yield
        except dg.Failure:
            failed()
            raise
        except (*PERMANENT_ERRORS, *permanent) as exc:
            failed(retryable=False, error=type(exc).__name__)
            raise dg.Failure(
                description=f"{type(exc).__name__}: {exc}", allow_retries=False
            ) from exc
        except Exception as exc:
            if is_permission_error(exc):
                # Permission denied / read-only file system: the same on every attempt.
                failed(retryable=False, error=type(exc).__name__)
                raise dg.Failure(
                    description=f"{type(exc).__name__}: {exc}", allow_retries=False
                ) from exc
            failed(retryable=True, error=type(exc).__name__)
            raise
        finally:
            # Steps run one after another in one process (the in-process executor): what a
            # stage freed goes back to the OS before the next one starts, so peaks do not stack.
            release_stage_memory()
        log.info("stage_finished", status="ok", latency_ms=(time.perf_counter() - started) * 1000)


def release_stage_memory() -> None:
    """Return the heap and Arrow pool pages a finished stage freed (milliseconds)."""
    release_freed_memory(force=True)
    pa.default_memory_pool().release_unused()


@contextmanager
def partition_scope(
    context: dg.AssetExecutionContext, stage: Stage, partition_key: str
) -> Iterator[PartitionRecord]:
    """One partition of the stage: a child span, the partition's record and its metrics."""
    record = PartitionRecord()
    retries_before = retry_counts()
    started = time.perf_counter()
    with (
        run_context(partition=partition_key),
        span(
            "asr.partition", {"asr.stage": stage.value, "asr.partition": partition_key}
        ) as current,
    ):
        yield record
        latency_ms = (time.perf_counter() - started) * 1000
        retries = _retry_delta(retries_before)
        summary = record.summary
        if summary is None:
            return
        engines = summary.extra.get("phrases_by_engine")
        activity_count = summary.extra.get("activities")
        attributes: dict[str, object] = {
            **record.attributes,
            "asr.phrases_in": summary.phrases_in,
            "asr.phrases_ok": summary.phrases_ok,
            "asr.phrases_errored": summary.phrases_errored,
            "asr.activity_count": activity_count if isinstance(activity_count, int) else None,
            "asr.model": record.model or record.attributes.get("asr.model"),
            "asr.device": record.device or record.attributes.get("asr.device"),
            "asr.retries": sum(retries.values()),
        }
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(
                    key, value if isinstance(value, int | float | str) else str(value)
                )
        log.info(
            "partition_finished",
            status="ok",
            partition=partition_key,
            phrases_in=summary.phrases_in,
            phrases_ok=summary.phrases_ok,
            phrases_errored=summary.phrases_errored,
            errors_by_reason=dict(sorted(summary.errors_by_reason.items())),
            retries=retries,
            latency_ms=latency_ms,
        )
        emit_stage(
            stage=stage.value,
            partition=partition_key,
            correlation_id=context.run.run_id,
            phrases_in=summary.phrases_in,
            phrases_ok=summary.phrases_ok,
            phrases_errored=summary.phrases_errored,
            latency_ms=latency_ms,
            retries=retries,
            device=record.device,
            model=record.model,
            phrases_by_engine=engines if isinstance(engines, dict) else None,
            errors_by_reason=summary.errors_by_reason,
        )
        if stage is Stage.PUBLISH:
            emit_slo_signal(
                "PartitionFreshnessS",
                partition_freshness_s(partition_key, time.time()),
                stage=stage.value,
                partition=partition_key,
                correlation_id=context.run.run_id,
            )


class ProgressLog:
    """INFO `inference_progress` lines: done/total, rate and ETA (the CLI's bar, and a live line
    in the UI's run log for a long day), at most one per `interval_s` plus the first and last.

    Why throttled: every line is a Dagster event, one SQLite write and commit in the run's
    event log; one per batch was 201 writes (~2.5 s) on a 3,204-phrase day, for a bar that
    needs a line every few seconds.
    """

    def __init__(
        self, logger: structlog.stdlib.BoundLogger, total: int, interval_s: float = 5.0
    ) -> None:
        self.logger, self.total, self.interval_s = logger, total, interval_s
        self.started = time.perf_counter()
        self.last_logged: float | None = None

    def update(self, done: int) -> None:
        now = time.perf_counter()
        due = self.last_logged is None or now - self.last_logged >= self.interval_s
        if not (due or done >= self.total):
            return
        self.last_logged = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        self.logger.info(
            "inference_progress",
            status="running",
            phrases_done=done,
            phrases_total=self.total,
            phrases_per_s=round(rate, 2),
            eta_s=round((self.total - done) / rate, 1) if rate > 0 else None,
        )


def each_partition(
    context: dg.AssetExecutionContext,
    stage: Stage,
    build: Callable[[str, PartitionRecord], StageSummary],
) -> list[StageSummary]:
    """Run `build` for every partition of the run, each inside its `partition_scope`.

    `build` returns the partition's summary and may add model, device or span attributes to
    the record it is given. Each partition's metadata lands on that partition's materialization
    (a multi-day backfill run records each day's own numbers, not a sum or the last day's).
    """
    summaries: list[StageSummary] = []
    store = getattr(context.resources, "store", None)
    for key in context.partition_keys:
        if store is not None and stage is not Stage.ACTIVITIES:
            # A step in its own process never saw the catalog: its redaction loads the digests.
            load_sensitive_digests(store, key)
        with partition_scope(context, stage, key) as record:
            record.summary = build(key, record)
        context.add_asset_metadata(partition_metadata(record.summary), partition_key=key)
        summaries.append(record.summary)
    return summaries
