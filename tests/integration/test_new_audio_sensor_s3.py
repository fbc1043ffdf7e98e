"""The new-audio sensor over successive ticks against S3 (moto), with S3's own timestamps."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from asr_assets.definitions import ALL_ASSETS, score_letters_job
from asr_assets.resources.catalog import DuckDBActivityCatalog
from asr_assets.resources.inference import LocalInferenceResource
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.publisher import LocalJsonlPublisher
from asr_assets.resources.s3 import S3ObjectStore
from asr_assets.sensors.new_audio import NewAudioSettings, build_new_audio_sensor
from tests.support.moto_server import MotoServer, aws_env, moto, s3_client  # noqa: F401

if TYPE_CHECKING:
    from dagster._core.definitions.sensor_definition import SensorExecutionData

pytestmark = pytest.mark.integration

BUCKET = "asr-audio"
SETTINGS = NewAudioSettings(settle_s=600, lookback_days=3, page_size=2, max_pages_per_tick=3)


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def resources_for(store: S3ObjectStore, tmp_path: Path) -> dict[str, object]:
    local = LocalObjectStore(root=str(tmp_path / "local"))
    return {
        "store": store,
        "catalog": DuckDBActivityCatalog(root=str(tmp_path)),
        "inference": LocalInferenceResource(model_dir=str(tmp_path / "model")),
        "publisher": LocalJsonlPublisher(store=local),
    }


def tick(
    instance: dg.DagsterInstance, resources: dict[str, object], cursor: str | None, now: datetime
) -> SensorExecutionData:
    sensor = build_new_audio_sensor(SETTINGS, clock=lambda: now)
    definitions = dg.Definitions(
        assets=ALL_ASSETS, jobs=[score_letters_job], sensors=[sensor], resources=resources
    )
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=definitions
    ) as context:
        return sensor.evaluate_tick(context)


def test_successive_ticks_over_s3(
    aws_env: MotoServer,  # noqa: F811
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    client = s3_client(aws_env.endpoint)
    client.create_bucket(Bucket=BUCKET)
    store = S3ObjectStore(bucket=BUCKET, endpoint_url=aws_env.endpoint, cache_dir=str(tmp_path))
    resources = resources_for(store, tmp_path)
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=offset)).isoformat() for offset in (2, 1)]
    for day in days:
        for index in range(3):
            client.put_object(Bucket=BUCKET, Key=f"audio/{day}/act-{index}/0.wav", Body=b"RIFF")
    client.put_object(Bucket=BUCKET, Key="audio/notes.txt", Body=b"ignored")
    uploaded = datetime.now(UTC)

    # Fresh uploads: the days are found but are still settling (S3's LastModified is "now").
    first = tick(instance, resources, None, uploaded)
    while first.skip_message and "being listed" in first.skip_message:
        first = tick(instance, resources, first.cursor, uploaded)  # 6 keys, 2 per page
    assert not first.run_requests
    assert "2 day(s) with new audio still settling" in (first.skip_message or "")

    settled = uploaded + timedelta(seconds=601)
    launched = tick(instance, resources, first.cursor, settled)
    assert sorted(r.partition_key for r in launched.run_requests) == days  # type: ignore[misc]
    # The same tick evaluated twice asks for the same run keys: Dagster launches them once.
    again = tick(instance, resources, first.cursor, settled)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in launched.run_requests]

    cursor = launched.cursor
    for _ in range(3):  # finish the pass: nothing new
        quiet = tick(instance, resources, cursor, settled)
        assert not quiet.run_requests
        cursor = quiet.cursor
    assert "No new audio" in (quiet.skip_message or "")

    # In production the new object lands after the launch, a settle period after the newest
    # covered one; here the clock is simulated, so wait out S3's one-second LastModified.
    time.sleep(1.05 - time.time() % 1)
    client.put_object(Bucket=BUCKET, Key=f"audio/{days[0]}/act-9/0.wav", Body=b"RIFF")
    later = datetime.now(UTC) + timedelta(seconds=601)
    requests: list[dg.RunRequest] = []
    for _ in range(4):
        result = tick(instance, resources, cursor, later)
        requests.extend(result.run_requests)  # type: ignore[arg-type]
        cursor = result.cursor
    assert [r.partition_key for r in requests] == [days[0]]
    assert requests[0].run_key not in {r.run_key for r in launched.run_requests}


def test_an_unreachable_bucket_skips_with_the_reason(
    aws_env: MotoServer,  # noqa: F811
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = S3ObjectStore(
        bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{port}", cache_dir=str(tmp_path)
    )
    result = tick(instance, resources_for(dead, tmp_path), None, datetime.now(UTC))
    assert not result.run_requests
    assert "Object store unreachable while listing 'audio/'" in (result.skip_message or "")
    assert "EndpointConnectionError" in (result.skip_message or "")
    # A bucket that does not exist is a store problem too, said as such.
    missing = S3ObjectStore(
        bucket="no-such-bucket", endpoint_url=aws_env.endpoint, cache_dir=str(tmp_path)
    )
    result = tick(instance, resources_for(missing, tmp_path), None, datetime.now(UTC))
    assert "NoSuchBucket" in (result.skip_message or "")
