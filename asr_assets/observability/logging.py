"""One structured log schema for every module.

Records are JSON carried by stdlib logging, so Dagster's captured logs, `dagster dev` and a log
shipper all see the same fields: service, env, correlation_id (the run id), stage, activity_id,
phrase_index, status, latency_ms. Student identifiers are removed before rendering, whatever a
caller passes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

SERVICE = "asr-platform"
FORBIDDEN_KEYS = frozenset({"student_id", "student", "student_name", "aws_secret_access_key"})
_configured = False
_lock = threading.Lock()


def _drop_forbidden(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in FORBIDDEN_KEYS.intersection(event):
        event.pop(key)
    return event


def _add_service(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event.setdefault("service", SERVICE)
    return event


def configure_logging() -> None:
    """Idempotent: configured on first use, never at import."""
    global _configured
    with _lock:
        if _configured:
            return
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                _add_service,
                _drop_forbidden,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
        logging.getLogger("asr_assets").setLevel(logging.INFO)
        _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    configure_logging()
    return structlog.get_logger(name)


def bind_run_context(**fields: Any) -> None:
    """Fields (correlation_id, env, stage) added to every record of this thread/context."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_run_context() -> None:
    structlog.contextvars.clear_contextvars()
