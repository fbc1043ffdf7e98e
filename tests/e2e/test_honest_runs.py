"""No false greens: empty days fail, multi-day runs record each day's own numbers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.assets.activities import activities
from asr_assets.definitions import ALL_ASSETS, build_definitions
from tests.support.data import STANDARD_DAY_ERRORS, standard_day, write_day

pytestmark = pytest.mark.e2e

DAY_1, DAY_2 = "2026-11-26", "2026-11-27"


def _resources(root: Path, model_dir: Path) -> dict[str, object]:
    env = {"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(model_dir)}
    return dict(build_definitions(env).resources)


def _events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


def test_empty_data_root_fails_without_retry_and_names_the_path(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            partition_key=DAY_2,
            resources=_resources(tmp_path, tiny_model_dir),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in _events(result, "STEP_FAILURE") if e.step_key == "activities")
    message = failure.step_failure_data.error.message
    assert str(tmp_path / "catalog" / "activities" / f"activity_date={DAY_2}") in message
    assert "no catalog rows" in message
    assert _events(result, "STEP_UP_FOR_RETRY") == []  # permanent: no step retry
    assert not list(tmp_path.rglob("_SUCCESS"))  # nothing committed for the day


def test_an_empty_day_on_purpose_is_allowed_by_config(tmp_path: Path, tiny_model_dir: Path) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [activities],
            partition_key=DAY_2,
            resources=_resources(tmp_path, tiny_model_dir),
            instance=instance,
            run_config={"ops": {"activities": {"config": {"allow_empty_day": True}}}},
        )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["phrases_in"].value == 0


def test_two_day_run_records_each_days_own_numbers(tmp_path: Path, tiny_model_dir: Path) -> None:
    day_1_phrases = standard_day(tmp_path, date.fromisoformat(DAY_1))
    day_2_phrases = day_1_phrases[:3]  # three good phrases, no errors
    write_day(tmp_path, date.fromisoformat(DAY_2), day_2_phrases)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            resources=_resources(tmp_path, tiny_model_dir),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": DAY_1,
                "dagster/asset_partition_range_end": DAY_2,
            },
        )
        assert result.success
        by_partition: dict[tuple[str, str | None], dict[str, object]] = {}
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            by_partition[(materialization.asset_key.path[-1], materialization.partition)] = {
                k: v.value for k, v in materialization.metadata.items()
            }
    for asset in ("activities", "letter_scores"):
        one, two = by_partition[(asset, DAY_1)], by_partition[(asset, DAY_2)]
        assert one["phrases_in"] == len(day_1_phrases), asset
        assert two["phrases_in"] == len(day_2_phrases), asset
        assert two["phrases_errored"] == 0, asset
    one, two = by_partition[("letter_scores", DAY_1)], by_partition[("letter_scores", DAY_2)]
    assert one["phrases_errored"] == len(STANDARD_DAY_ERRORS)
    assert one["activities"] == 3 and two["activities"] == 1
    assert one["letters"] != two["letters"]
    assert one["dagster/row_count"] >= one["letters"]
    assert DAY_1 in str(one["result_path"]) and DAY_2 in str(two["result_path"])
