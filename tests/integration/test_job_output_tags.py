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


@pytest.mark.e2e
def test_a_job_on_s3_tags_its_output_objects(
    aws_env: MotoServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API's engine adapter on the S3 store: s3:// locations in, tagged objects out."""
    import dagster as dg

    from asr_assets.platform.api.backend import PlatformJobsBackend
    from asr_assets.platform.jobs.models import JobRequest
    from tests.support.jobs import SAMPLE_STORE, wait_for, write_instance_yaml

    client = s3_client(aws_env.endpoint)
    client.create_bucket(Bucket=BUCKET)
    activity = SAMPLE_STORE / "audio" / "2026-11-27" / "3e4ffd28-0c09-4bcb-b709-587cd780b1d5"
    for name in ("0.flac", "1.flac"):
        body = (activity / name).read_bytes()
        client.put_object(Bucket=BUCKET, Key=f"asr/tenants/a/in/{name}", Body=body)
    home = tmp_path / "home"
    write_instance_yaml(home)
    for name, value in {
        "DAGSTER_HOME": str(home),
        "ASR_ENV": "aws",
        "ASR_S3_BUCKET": BUCKET,
        "ASR_S3_PREFIX": "asr",
        "ASR_S3_ENDPOINT_URL": aws_env.endpoint,
        "ASR_S3_CACHE_DIR": str(tmp_path / "s3-cache"),
        "ASR_S3_CACHE_MIN_FREE_MB": "1",
        "ASR_ATHENA_DATABASE": "asr",
        "ASR_ATHENA_OUTPUT_LOCATION": f"s3://{BUCKET}/queries/",
        "ASR_MODEL_DIR": str(Path(__file__).resolve().parents[2] / "models" / "demo-letters"),
        "ASR_INFERENCE": "local",
        # Required by the aws environment's publisher; jobs never publish.
        "ASR_APPSYNC_URL": "http://127.0.0.1:9/graphql",
        "ASR_APPSYNC_AUTH_MODE": "api_key",
        "ASR_APPSYNC_API_KEY": "unused",  # pragma: allowlist secret
        "ASR_TORCH_THREADS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    engine = PlatformJobsBackend()
    job_id = engine.submit(
        JobRequest(
            workload="transcribe:1",
            input_prefix=f"s3://{BUCKET}/asr/tenants/a/in/",
            output_prefix=f"s3://{BUCKET}/asr/tenants/a/out/",
            tenant="team-a",
            team="speech",
            tags={"project": "s3-tags"},
        )
    )
    with dg.DagsterInstance.get() as instance:
        done = wait_for(job_id, instance, timeout_s=300)
    assert done.state.value == "COMPLETED", done.failure_reason
    assert done.progress.done == 2
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="asr/tenants/a/out/")["Contents"]
    keys = {item["Key"] for item in listed}
    shard = "asr/tenants/a/out/shards/shard-00000"
    assert {f"{shard}/part-0.parquet", f"{shard}/_SUCCESS"} <= keys
    for key in (
        f"{shard}/part-0.parquet",
        f"{shard}/_SUCCESS",
        "asr/tenants/a/out/_job/report.json",
    ):
        tags = _tags(client, key)
        assert tags["asr/job"] == job_id and tags["asr/tenant"] == "team-a", key
        assert tags["asr/team"] == "speech" and tags["project"] == "s3-tags", key
