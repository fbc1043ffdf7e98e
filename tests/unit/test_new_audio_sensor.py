"""The new-audio sensor over successive ticks, on the local store with controlled mtimes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from asr_assets.definitions import ALL_ASSETS, build_definitions, score_letters_job
from asr_assets.resources.catalog import DuckDBActivityCatalog
from asr_assets.resources.inference import LocalInferenceResource
from asr_assets.resources.object_store import ListPage, LocalObjectStore, StoreUnavailableError
from asr_assets.resources.publisher import LocalJsonlPublisher
from asr_assets.sensors import ALL_SENSORS
from asr_assets.sensors.new_audio import (
    NewAudioCursor,
    NewAudioSettings,
    build_new_audio_sensor,
    partition_of_key,
)

if TYPE_CHECKING:
    from dagster._core.definitions.sensor_definition import SensorExecutionData

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SETTINGS = NewAudioSettings(settle_s=1800, lookback_days=7)


class DownInference(LocalInferenceResource):
    """Unit-test double: the hook a Triton resource implements with a health check."""

    def unavailable_reason(self) -> str | None:
        return "Triton circuit breaker is open"


class DownCatalog(DuckDBActivityCatalog):
    def unavailable_reason(self) -> str | None:
        return "Athena is unreachable (GetWorkGroup 'primary': EndpointConnectionError)"


class FailingStore(LocalObjectStore):
    def list_page(
        self, prefix: str, *, start_after: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        raise StoreUnavailableError(
            "S3 ListObjectsV2 on bucket 'b' failed: EndpointConnectionError"
        )


class HangingStore(LocalObjectStore):
    def list_page(
        self, prefix: str, *, start_after: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        time.sleep(3)
        return ListPage([], None)


def put(root: Path, key: str, modified: datetime) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    os.utime(path, (modified.timestamp(), modified.timestamp()))


@pytest.fixture
def resources(tmp_path: Path) -> dict[str, object]:
    store = LocalObjectStore(root=str(tmp_path))
    return {
        "store": store,
        "catalog": DuckDBActivityCatalog(root=str(tmp_path)),
        # The sensor only asks inference whether it is available; no model is loaded.
        "inference": LocalInferenceResource(model_dir=str(tmp_path / "model")),
        "publisher": LocalJsonlPublisher(store=store),
    }


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:  # one per module: creating one costs ~0.5 s
        yield test_instance


Tick = Callable[..., "SensorExecutionData"]


@pytest.fixture
def tick(instance: dg.DagsterInstance) -> Tick:
    def evaluate(
        resources: dict[str, object],
        cursor: str | None,
        now: datetime = NOW,
        settings: NewAudioSettings = SETTINGS,
    ) -> SensorExecutionData:
        sensor = build_new_audio_sensor(settings, clock=lambda: now)
        # The definitions resolve the partitioned run requests against the score_letters job.
        definitions = dg.Definitions(
            assets=ALL_ASSETS, jobs=[score_letters_job], sensors=[sensor], resources=resources
        )
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, definitions=definitions
        ) as context:
            return sensor.evaluate_tick(context)

    return evaluate


def requested(result: SensorExecutionData) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "day"),
    [
        ("audio/2026-11-27/act-1/0.wav", "2026-11-27"),
        ("audio/2026-11-27/x.wav", "2026-11-27"),
        ("audio/2026-11-27", None),
        ("audio/2026-13-40/x.wav", None),
        ("audio/20261127/x.wav", None),
        ("audio/readme.txt", None),
        ("other/2026-11-27/x.wav", None),
    ],
)
def test_partition_comes_from_the_key_layout(key: str, day: str | None) -> None:
    found = partition_of_key(key, "audio/")
    assert (found.isoformat() if found else None) == day


def test_new_objects_make_one_run_request_per_day(tmp_path: Path, resources, tick: Tick) -> None:
    two_hours_ago = NOW - timedelta(hours=2)
    put(tmp_path, "audio/2026-11-26/act-1/0.wav", two_hours_ago)
    put(tmp_path, "audio/2026-11-26/act-1/1.wav", two_hours_ago + timedelta(minutes=5))
    put(tmp_path, "audio/2026-11-27/act-2/0.wav", two_hours_ago)
    result = tick(resources, None)
    assert set(requested(result)) == {"2026-11-26", "2026-11-27"}
    for request in result.run_requests:  # type: ignore[union-attr]
        assert request.job_name is None  # the sensor's one target: score_letters
        assert request.run_key.startswith(f"new_audio:{request.partition_key}:")
        assert request.tags["asr/trigger"] == "new_audio"
        # keys (which may name people) never appear in run keys, tags or the cursor's marks
        assert "act-1" not in request.run_key and "act-1" not in json.dumps(request.tags)
    assert "act-1" not in json.dumps(json.loads(result.cursor)["launched"])  # type: ignore[arg-type]


def test_the_same_tick_twice_requests_the_same_run_keys_and_nothing_after(
    tmp_path: Path, resources, tick: Tick
) -> None:
    put(tmp_path, "audio/2026-11-27/a.wav", NOW - timedelta(hours=1))
    first = tick(resources, None)
    again = tick(resources, None)
    assert requested(first) == requested(again) != {}  # Dagster launches one run per run_key
    after = tick(resources, first.cursor)
    assert not after.run_requests
    assert "No new audio under 'audio/'" in (after.skip_message or "")


def test_a_new_object_in_a_scored_day_requests_a_new_run(
    tmp_path: Path, resources, tick: Tick
) -> None:
    put(tmp_path, "audio/2026-11-27/a.wav", NOW - timedelta(hours=3))
    put(tmp_path, "audio/2026-11-26/a.wav", NOW - timedelta(hours=3))
    first = tick(resources, None)
    # A late upload whose key sorts before the others still lands in its day.
    put(tmp_path, "audio/2026-11-27/0-late.wav", NOW - timedelta(hours=1))
    second = tick(resources, first.cursor)
    assert set(requested(second)) == {"2026-11-27"}
    assert requested(second)["2026-11-27"] != requested(first)["2026-11-27"]
    assert not tick(resources, second.cursor).run_requests


def test_a_day_still_receiving_audio_waits_for_the_settle_period(
    tmp_path: Path, resources, tick: Tick
) -> None:
    put(tmp_path, "audio/2026-11-28/a.wav", NOW - timedelta(minutes=5))
    waiting = tick(resources, None)
    assert not waiting.run_requests
    assert "still settling: 2026-11-28 (settles 2026-11-28T12:25:00Z)" in (
        waiting.skip_message or ""
    )
    # More audio arrives: the settle clock restarts from the newest object.
    put(tmp_path, "audio/2026-11-28/b.wav", NOW + timedelta(minutes=20))
    later = NOW + timedelta(minutes=30)
    still = tick(resources, waiting.cursor, now=later)
    assert not still.run_requests and "settles 2026-11-28T12:50:00Z" in (still.skip_message or "")
    ready = tick(resources, still.cursor, now=NOW + timedelta(minutes=51))
    assert set(requested(ready)) == {"2026-11-28"}


def test_each_tick_lists_a_bounded_number_of_pages_and_resumes(
    tmp_path: Path, resources, tick: Tick
) -> None:
    old = NOW - timedelta(hours=5)
    for index in range(45):
        put(tmp_path, f"audio/2026-11-26/{index:03d}.wav", old + timedelta(seconds=index))
    put(tmp_path, "audio/2026-11-27/a.wav", old)
    settings = NewAudioSettings(settle_s=60, page_size=10, max_pages_per_tick=2)
    cursor = None
    launched: dict[str, str] = {}
    for number in range(1, 6):
        result = tick(resources, cursor, settings=settings)
        cursor = result.cursor
        state = NewAudioCursor.parse(cursor)
        launched.update(requested(result))
        if number == 1:
            # 20 of the 45 keys of the 26th listed: the day is not launched half-seen.
            assert state.resume_after == "audio/2026-11-26/019.wav" and not launched
            assert "still being listed: 2026-11-26" in (result.skip_message or "")
    assert set(launched) == {"2026-11-26", "2026-11-27"}
    assert state.passes >= 1


def test_keys_outside_the_layout_or_the_window_are_ignored(
    tmp_path: Path, resources, tick: Tick
) -> None:
    old = NOW - timedelta(hours=2)
    for key in [
        "audio/readme.txt",
        "audio/2026-13-45/x.wav",
        "audio/2026-11-01/too-old.wav",  # before the 7-day look-back window
        "audio/2026-12-05/future.wav",  # past the last partition
        "uploads/2026-11-27/other-prefix.wav",
    ]:
        put(tmp_path, key, old)
    result = tick(resources, None)
    assert not result.run_requests
    assert "No new audio" in (result.skip_message or "")


def test_unavailable_inference_skips_with_its_reason(tmp_path: Path, resources, tick: Tick) -> None:
    put(tmp_path, "audio/2026-11-27/a.wav", NOW - timedelta(hours=1))
    resources = {**resources, "inference": DownInference(model_dir="unused")}
    result = tick(resources, None)
    assert not result.run_requests
    assert result.skip_message == (
        "Inference is unavailable, not looking for new audio: Triton circuit breaker is open"
    )
    assert result.cursor is None  # nothing consumed: the day is found again once it is back


def test_unreachable_catalog_keeps_ready_days_for_the_next_tick(
    tmp_path: Path, resources, tick: Tick
) -> None:
    put(tmp_path, "audio/2026-11-27/a.wav", NOW - timedelta(hours=1))
    down = tick({**resources, "catalog": DownCatalog(root=str(tmp_path))}, None)
    assert not down.run_requests
    assert "1 day(s) ready to score, but the catalog is unreachable: Athena" in (
        down.skip_message or ""
    )
    assert "2026-11-27" in NewAudioCursor.parse(down.cursor).pending
    back = tick(resources, down.cursor)
    assert set(requested(back)) == {"2026-11-27"}


def test_unreachable_store_skips_and_keeps_the_cursor(
    tmp_path: Path, resources, tick: Tick
) -> None:
    result = tick({**resources, "store": FailingStore(root=str(tmp_path))}, "{}")
    assert not result.run_requests
    assert (result.skip_message or "").startswith("Object store unreachable while listing")
    assert "EndpointConnectionError" in (result.skip_message or "")


def test_a_hung_listing_is_abandoned_at_the_deadline(tmp_path: Path, resources, tick: Tick) -> None:
    settings = NewAudioSettings(tick_deadline_s=0.2)
    started = time.monotonic()
    result = tick({**resources, "store": HangingStore(root=str(tmp_path))}, None, settings=settings)
    assert time.monotonic() - started < 2.5
    assert "did not finish within 0.2s" in (result.skip_message or "")


def test_a_lost_cursor_asks_for_the_same_run_keys(tmp_path: Path, resources, tick: Tick) -> None:
    put(tmp_path, "audio/2026-11-27/a.wav", NOW - timedelta(hours=1))
    first = tick(resources, None)
    fresh = tick(resources, "not json at all")
    assert requested(fresh) == requested(first)


def test_sensor_is_registered_and_configured_from_the_environment() -> None:
    assert [sensor.name for sensor in ALL_SENSORS] == ["new_audio"]
    definitions = build_definitions({"ASR_SENSOR_INTERVAL_S": "120"})
    sensor = definitions.resolve_sensor_def("new_audio")
    assert sensor.job_name == "score_letters"
    assert sensor.minimum_interval_seconds == 120
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
