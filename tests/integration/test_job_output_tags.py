"""A job's tags on its committed output: S3 object tags (a real moto server), the local sidecar."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_assets.platform.jobs.shards import SUCCESS_FILE, commit_shard, shard_prefix
from asr_assets.platform.jobs.tagging import output_tags, s3_tag_set, tag_objects
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.s3 import S3ObjectStore
from tests.support.moto_server import MotoServer, aws_env, moto, s3_client  # noqa: F401

pytestmark = pytest.mark.integration
BUCKET = "asr-results"
RUN_TAGS = {
    "asr/job": "job-1",
    "asr/tenant": "team-a",
    "asr/team": "speech",
    "asr/workload": "transcribe:1.0.0",
    "asr/priority": "high",
    "asr/cost-center": "cc-42",
    "asr/output-prefix": "out/",
    "dagster/priority": "10",
    "dagster/partition": "job-1",
    "project": "reading check",
}


def _staged(store: LocalObjectStore | S3ObjectStore, key: str) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"key": ["a.wav"]}), sink)
    store.write_bytes(key, sink.getvalue())


def _tags(client: object, key: str) -> dict[str, str]:
    found = client.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]  # type: ignore[attr-defined]
    return {tag["Key"]: tag["Value"] for tag in found}


def test_committed_shard_objects_carry_the_jobs_tags_on_s3(
    aws_env: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = s3_client(aws_env.endpoint)
    client.create_bucket(Bucket=BUCKET)
    store = S3ObjectStore(
        bucket=BUCKET, prefix="root", endpoint_url=aws_env.endpoint, cache_dir=str(tmp_path)
    )
    _staged(store, "out/_job/staging/r1/shard-00000.parquet")
    tags = output_tags(RUN_TAGS)
    target = commit_shard(
        store, "out", 0, "out/_job/staging/r1/shard-00000.parquet", {"files": 1}, tags
    )
    expected = {
        "asr/job": "job-1",
        "asr/tenant": "team-a",
        "asr/team": "speech",
        "asr/workload": "transcribe:1.0.0",
        "asr/cost-center": "cc-42",
        "asr/priority": "high",
        "project": "reading check",
    }
    assert _tags(client, f"root/{target}") == expected
    success = f"{shard_prefix('out', 0)}/{SUCCESS_FILE}"
    assert _tags(client, f"root/{success}") == expected
    assert store.read_json(success)["tags"] == expected


def test_a_refused_tagging_call_leaves_the_output_committed(
    aws_env: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = s3_client(aws_env.endpoint)
    client.create_bucket(Bucket=BUCKET)
    store = S3ObjectStore(bucket=BUCKET, endpoint_url=aws_env.endpoint, cache_dir=str(tmp_path))
    store.write_bytes("out/report.json", b"{}")
    # One key that exists, one that does not: only the real object is tagged, nothing raises.
    assert tag_objects(store, ["out/report.json", "out/missing.json"], {"asr/job": "j"}) == 1
    assert _tags(client, "out/report.json") == {"asr/job": "j"}


def test_the_local_store_keeps_the_tags_in_the_commit_record(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path))
    _staged(store, "out/_job/staging/r1/shard-00000.parquet")
    tags = output_tags(RUN_TAGS)
    commit_shard(store, "out", 0, "out/_job/staging/r1/shard-00000.parquet", {"files": 1}, tags)
    record = store.read_json(f"{shard_prefix('out', 0)}/{SUCCESS_FILE}")
    assert record["tags"]["asr/tenant"] == "team-a" and record["tags"]["project"] == "reading check"
    assert tag_objects(store, ["out/x"], tags) == 0


def test_s3_tag_sets_respect_the_limits() -> None:
    many = {**output_tags(RUN_TAGS), **{f"u{i}": "v" for i in range(8)}, "bad#key": "é\n"}
    tag_set = s3_tag_set(output_tags({**RUN_TAGS, **many}))
    assert len(tag_set) == 10
    # Identity first: every asr/ tag survives the cut.
    assert [t["Key"] for t in tag_set[:6]] == [
        "asr/job",
        "asr/tenant",
        "asr/team",
        "asr/workload",
        "asr/cost-center",
        "asr/priority",
    ]
    cleaned = dict((t["Key"], t["Value"]) for t in s3_tag_set({"bad#key": "é\n", "k" * 200: "v"}))
    assert cleaned == {"bad_key": "__", "k" * 128: "v"}
