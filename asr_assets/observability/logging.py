"""One structured log schema for every module.

Records are JSON carried by stdlib logging, so Dagster's captured logs (`dagster.yaml` manages the
`asr_assets` loggers), `dagster dev` and a log shipper all see the same fields:

| field | always | meaning |
| --- | --- | --- |
| `event`, `level`, `timestamp`, `logger` | yes | what happened, severity, UTC ISO time, module |
| `service` | yes | `asr-platform` |
| `env` | yes | `local` / `aws` (set when the definitions load), `unknown` before that |
| `correlation_id` | yes (null outside a run) | the Dagster run id, bound by each asset |
| `stage` | yes (null outside a stage) | `activities`, `phrase_audio`, ..., `published_scores` |
| `activity_id`, `phrase_index` | per-phrase records | the phrase concerned |
| `status` | outcome records | `started`, `ok`, `failed`, `retrying`, `fallback`, ... |
| `latency_ms` | timed records | float milliseconds |
| `trace_id`, `span_id` | while a span records | OpenTelemetry ids (hex), to find the trace |

Levels policy: INFO when a stage (or a dependency call worth timing) starts and finishes; DEBUG
per phrase; WARNING for a retry, a fallback, a degraded path; ERROR for a failed stage, with the
stack (`exc_info=True` renders it into `exception`).

Student identifiers never reach a log: keys that name them are dropped at any depth, and the
values the activities stage has seen as `student_id`s (`register_sensitive_values`) are replaced by
`[redacted]` wherever they appear in a string, tracebacks included. Rows are never passed to logs;
this is the net under that rule.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import structlog

SERVICE = "asr-platform"
FORBIDDEN_KEYS = frozenset({"student_id", "student", "student_name", "aws_secret_access_key"})
SCHEMA_FIELDS = ("service", "env", "correlation_id", "stage")
OPTIONAL_FIELDS = ("activity_id", "phrase_index", "status", "latency_ms")
REDACTED = "[redacted]"
MAX_SENSITIVE_VALUES = 200_000
# Ids are matched as whole tokens (a linear scan, whatever the number of ids): first as coarse
# tokens (which keep e-mail-like ids whole), then as fine ones (an id inside a path or file name).
_TOKENS = (re.compile(r"[\w\-.:@+]+"), re.compile(r"[\w\-]+"))
_MAX_DEPTH = 4

_configured = False
_lock = threading.Lock()
_environment = "unknown"
_debug_sampling_rate = 1.0
_sensitive: set[str] = set()
# Digests of sensitive values, for processes that never saw the values themselves (a check or a
# later stage in its own process loads them from the partition's activities stage).
_sensitive_digests: set[str] = set()
_sensitive_lock = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")


def _is_forbidden(key: object) -> bool:
    return isinstance(key, str) and (key in FORBIDDEN_KEYS or "student" in key.lower())


def sensitive_digest(value: str) -> str:
    """What is stored instead of a sensitive value so other processes can recognise it."""
    return hashlib.sha256(f"asr-sensitive|{value}".encode()).hexdigest()[:32]


def _is_sensitive(token: str) -> bool:
    return token in _sensitive or (
        bool(_sensitive_digests) and sensitive_digest(token) in _sensitive_digests
    )


def _scrub_text(text: str) -> str:
    if not (_sensitive or _sensitive_digests) or not text:
        return text
    if _is_sensitive(text):
        return REDACTED
    for token in _TOKENS:
        text = token.sub(lambda m: REDACTED if _is_sensitive(m.group(0)) else m.group(0), text)
    return text


def redact(value: Any) -> Any:
    """The same redaction the logs get, for anything else that leaves the process (metadata,
    previews, reports): registered sensitive values become `[redacted]`, forbidden keys go."""
    return _scrub(value)


def register_sensitive_digests(digests: Iterable[str]) -> None:
    with _sensitive_lock:
        for digest in digests:
            if len(_sensitive_digests) >= MAX_SENSITIVE_VALUES:
                break
            _sensitive_digests.add(digest)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: _scrub(v, depth + 1) for k, v in value.items() if not _is_forbidden(k)}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _drop_forbidden(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in [k for k in event if _is_forbidden(k)]:
        event.pop(key)
    for key, value in event.items():
        if isinstance(value, str | Mapping | list | tuple | set | frozenset):
            event[key] = _scrub(value)
    return event


def _add_schema(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event.setdefault("service", SERVICE)
    event.setdefault("env", _environment)
    event.setdefault("correlation_id", None)
    event.setdefault("stage", None)
    if "latency_ms" in event and event["latency_ms"] is not None:
        event["latency_ms"] = round(float(event["latency_ms"]), 3)
    return event


def _add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # No import here: if OpenTelemetry was never imported, no span can be active.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return event
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


# ASR_LOG_LEVEL as configured, or None when not configured. Dagster sets the level of every
# managed logger (ours included) to the instance's `python_log_level` when a run starts, after
# the definitions applied ASR_LOG_LEVEL; `run_context` (entered by every stage and check)
# applies it again, so the configured level is the one in force while a stage runs.
_configured_level: int | None = None


def _sample_debug(
    _logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Keep `ASR_LOG_SAMPLING_RATE` of DEBUG records, chosen per run: a sampled run keeps all its
    DEBUG records (a story, not fragments), the others none. INFO and above are never sampled."""
    if method != "debug" or _debug_sampling_rate >= 1.0:
        return event
    key = str(event.get("correlation_id") or event.get("event") or "")
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if bucket >= _debug_sampling_rate:
        raise structlog.DropEvent
    return event


def set_log_sampling_rate(rate: float | str | None) -> None:
    """Share of runs whose DEBUG records are kept (`ASR_LOG_SAMPLING_RATE`, 0..1, default 1)."""
    global _debug_sampling_rate
    if rate is None or rate == "":
        return
    value = float(rate)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"log sampling rate {rate!r} is outside 0..1")
    _debug_sampling_rate = value


def current_environment() -> str | None:
    return None if _environment == "unknown" else _environment


def configure_logging() -> None:
    """Idempotent: configured on first use, never at import."""
    global _configured
    with _lock:
        if _configured:
            return
        structlog.configure(
            processors=[
                # First: DEBUG records cost nothing more when DEBUG is off.
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                _add_schema,
                _sample_debug,
                _add_trace_ids,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                # Last before rendering: also scrubs the rendered traceback.
                _drop_forbidden,
                structlog.processors.JSONRenderer(sort_keys=True, default=str),
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
        logger = logging.getLogger("asr_assets")
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    configure_logging()
    return structlog.get_logger(name)


def set_environment(name: str) -> None:
    """The `env` of every record from now on (called when the definitions load)."""
    global _environment
    _environment = name


def set_log_level(level: str | int | None) -> None:
    """Level of the `asr_assets` loggers (`ASR_LOG_LEVEL`); None leaves it as it is."""
    if level is None or level == "":
        return
    resolved = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(resolved, int):
        raise ValueError(f"unknown log level {level!r}")
    global _configured_level
    _configured_level = resolved
    logging.getLogger("asr_assets").setLevel(resolved)


def register_sensitive_values(values: Iterable[object]) -> None:
    """Values (student ids) to redact from every record of this process from now on."""
    with _sensitive_lock:
        for value in values:
            if len(_sensitive) >= MAX_SENSITIVE_VALUES:
                break
            if isinstance(value, str) and len(value) >= 3:
                _sensitive.add(value)


def clear_sensitive_values() -> None:
    with _sensitive_lock:
        _sensitive.clear()
        _sensitive_digests.clear()


def bind_run_context(**fields: Any) -> None:
    """Fields (correlation_id, env, stage) added to every record of this thread/context."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_run_context() -> None:
    structlog.contextvars.clear_contextvars()


@contextmanager
def run_context(**fields: Any) -> Iterator[None]:
    """Bind fields for the block and restore the previous values after it."""
    if _configured_level is not None:
        logging.getLogger("asr_assets").setLevel(_configured_level)
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def in_current_context(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, run in a copy of the caller's context (log fields, the active span).

    Thread pools do not carry contextvars into their workers; wrap the task with this in the
    submitting thread. Each call gets its own copy, so concurrent tasks cannot clash.
    """
    snapshot = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return snapshot.copy().run(function, *args, **kwargs)

    return run
