"""Erasure on the production store: S3 (moto server) and its local read cache, AppSync retract."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.core.privacy import SubjectKind
from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.resources.privacy import Eraser
from asr_assets.resources.publisher import AppSyncPublisher
from asr_assets.resources.s3 import S3ObjectStore
from tests.integration.test_appsync_publisher import API_KEY
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day
from tests.support.graphql_server import running_appsync
from tests.support.moto_server import MotoServer, aws_env, moto, s3_client, upload_tree  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAY = date(2026, 11, 20)
STUDENT = "kid-S3-erase-91"


def test_erasure_on_s3_leaves_nothing_in_the_bucket_the_cache_or_appsync(
    aws_env: MotoServer,  # noqa: F811
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    local = tmp_path / "local"
    write_day(
        local,
        DAY,
        [
            PhraseSpec("s3-erase-act", 0, "b d", wav_bytes(tone(1.2, freq=230)),
                       "audio/s3-erase-act/0.wav", student_id=STUDENT),
            PhraseSpec("s3-keep-act", 0, "m n", wav_bytes(tone(1.1, freq=310)),
                       "audio/s3-keep-act/0.wav", student_id="kid-keep"),
        ],
    )  # fmt: skip
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(local), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        assert dg.materialize(
            ALL_ASSETS,
            partition_key=DAY.isoformat(),
            resources=definitions.resources,
            instance=instance,
        ).success
    client = s3_client(aws_env.endpoint)
    client.create_bucket(Bucket="erase")
    upload_tree(client, "erase", local, prefix="p/")
    store = S3ObjectStore(
        bucket="erase", prefix="p", endpoint_url=aws_env.endpoint,
        cache_dir=str(tmp_path / "cache"), min_free_bytes=0,
    )  # fmt: skip
    store.read_bytes("audio/s3-erase-act/0.wav")  # now also in the local read cache
    with running_appsync(api_key=API_KEY) as (url, state):
        state.records["s3-erase-act"] = {"activity_id": "s3-erase-act"}
        state.records["s3-keep-act"] = {"activity_id": "s3-keep-act"}
        publisher = AppSyncPublisher(url=url, api_key=API_KEY)
        receipt = Eraser(store, publisher, b"k" * 32).erase(
            SubjectKind.STUDENT, STUDENT, requested_by="test", reason="test"
        )
        assert sorted(state.records) == ["s3-keep-act"]
    assert receipt.removed["published_records"] == 2  # AppSync + a JSONL sink in the bucket
    assert receipt.removed["audio_objects"] == 1

    leftovers = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="erase"):
        for item in page.get("Contents", []):
            key = item["Key"]
            body = client.get_object(Bucket="erase", Key=key)["Body"].read()
            texts = [key, body.decode("utf-8", errors="replace")]
            if key.endswith(".parquet"):
                texts.append(json.dumps(pq.read_table(pa_buffer(body)).to_pylist(), default=str))
            leftovers += [
                key for needle in (STUDENT, "s3-erase-act") if any(needle in t for t in texts)
            ]
    assert leftovers == []
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    erased_audio = (local / "audio" / "s3-erase-act" / "0.wav").read_bytes()
    assert all(p.read_bytes() != erased_audio for p in cached)
    manifest = json.loads(
        client.get_object(
            Bucket="erase", Key=f"p/results/letter_scores/activity_date={DAY}/_SUCCESS"
        )["Body"].read()
    )
    assert manifest["phrases_in"] == 1 and manifest["run_id"].startswith("erasure-")


def pa_buffer(body: bytes):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.BufferReader(body)
