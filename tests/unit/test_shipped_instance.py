"""The shipped dagster.yaml: ASR_LOG_LEVEL works under it, and one run per partition at a time."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.log_manager import DagsterLogManager

from asr_assets.observability.logging import get_logger, set_log_level

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped_instance(tmp_path: Path):
    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=shipped, temp_dir=str(tmp_path)) as instance:
        yield instance


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(("level", "debug_seen"), [("DEBUG", True), ("INFO", False)])
def test_asr_log_level_holds_under_the_shipped_instance(
    shipped_instance: dg.DagsterInstance, level: str, debug_seen: bool
) -> None:
    capture = _Capture()
    parent = logging.getLogger("asr_assets")
    parent.addHandler(capture)
    try:
        set_log_level(level)  # as the definitions do from ASR_LOG_LEVEL at load
        # What Dagster does at run start: managed loggers get the instance's level.
        DagsterLogManager.create(loggers=[], instance=shipped_instance)
        get_logger("asr_assets.test").debug("debug_canary_event")
        get_logger("asr_assets.test").info("info_canary_event")
    finally:
        parent.removeHandler(capture)
        set_log_level("INFO")
    text = "\n".join(capture.messages)
    assert "info_canary_event" in text
    assert ("debug_canary_event" in text) is debug_seen


def test_one_run_per_partition_in_the_run_queue(shipped_instance: dg.DagsterInstance) -> None:
    coordinator = shipped_instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    limits = coordinator.get_run_queue_config().tag_concurrency_limits
    assert {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in limits
