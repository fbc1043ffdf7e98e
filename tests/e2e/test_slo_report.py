"""`slo_report` over a real run history: SLIs, budgets and burn rates in the asset's metadata."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.assets.slo import slo_report
from asr_assets.definitions import ALL_ASSETS, build_definitions
from tests.support.data import STANDARD_DAY_ERRORS, standard_day

pytestmark = pytest.mark.e2e


def test_slo_report_reads_the_run_history(tmp_path: Path, tiny_model_dir: Path) -> None:
    day = date(2026, 11, 27)
    phrases = standard_day(tmp_path, day)
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(tmp_path), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        scored = dg.materialize(
            ALL_ASSETS,
            partition_key=day.isoformat(),
            resources=definitions.resources,
            instance=instance,
        )
        assert scored.success
        result = dg.materialize([slo_report], resources=definitions.resources, instance=instance)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    success = 1 - len(STANDARD_DAY_ERRORS) / len(phrases)
    assert metadata["phrase_success_rate/sli"] == pytest.approx(success)
    # 50% errors against a 2% budget: a burn of 25 in every window, and both pages fire.
    for window in ("1h", "6h", "3d"):
        assert metadata[f"phrase_success_rate/burn_{window}"] == pytest.approx((1 - success) / 0.02)
    assert metadata["alerting"]["phrase_success_rate"] == ["page:1h", "page:6h", "ticket:3d"]
    # The day was published long after it closed: freshness is spent; the run did not queue.
    assert metadata["partition_freshness/sli"] == 0.0
    assert metadata["queue_age/sli"] == 1.0
    assert metadata["transcripts_latency/sli"] == 1.0
    assert "triton_availability/sli" not in metadata  # local inference: not applicable
    table = metadata["slos"]
    assert "gpu_utilization" in table and "Prometheus" in table
    assert datetime.now(UTC).date().isoformat() in metadata["sli_by_day"]
