"""The shipped dagster.yaml: ASR_LOG_LEVEL works under it, and one run per partition at a time."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from asr_assets.assets.activities import activities
from asr_assets.definitions import build_definitions
from asr_assets.observability import logging as logging_module
from asr_assets.observability.logging import set_log_level
from tests.support.data import PhraseSpec, write_day

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped_instance(tmp_path: Path):
    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=shipped, temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.mark.parametrize(("level", "debug_seen"), [("DEBUG", True), (None, False)])
def test_asr_log_level_holds_under_the_shipped_instance(
    shipped_instance: dg.DagsterInstance, tmp_path: Path, level: str | None, debug_seen: bool
) -> None:
    """A real run on the shipped instance: ASR_LOG_LEVEL=DEBUG puts per-phrase DEBUG records
    into the run's event log; without it they stay out."""
    write_day(
        tmp_path,
        date(2026, 11, 27),
        [PhraseSpec("a", 0, "B D", None, "audio/a/0.wav")],  # rejected: a DEBUG record
    )
    environ = {
        "ASR_DATA_ROOT": str(tmp_path),
        "ASR_MODEL_DIR": str(ROOT / "models" / "demo-letters"),
    }
    if level:
        environ["ASR_LOG_LEVEL"] = level
    parent = logging.getLogger("asr_assets")
    before = parent.level
    try:
        definitions = build_definitions(environ)
        result = dg.materialize(
            [activities],
            partition_key="2026-11-27",
            resources=definitions.resources,
            instance=shipped_instance,
        )
    finally:
        parent.setLevel(before)
        set_log_level("INFO")
        logging_module._configured_level = None
    messages = "\n".join(
        record.event_log_entry.user_message
        for record in shipped_instance.get_records_for_run(result.run_id).records
    )
    assert "stage_started" in messages
    assert ("phrase_rejected" in messages) is debug_seen


def test_one_run_per_partition_in_the_run_queue(shipped_instance: dg.DagsterInstance) -> None:
    coordinator = shipped_instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    limits = coordinator.get_run_queue_config().tag_concurrency_limits
    assert {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in limits
