"""The API's default engine adapter: run logs from the Dagster instance, the workload registry,
input counts from the object store. (Submission itself is the platform core's.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.platform.api.backend import (
    PlatformJobsBackend,
    WorkloadRegistryError,
    in_store_keys,
    store_key,
)
from asr_assets.platform.jobs.models import JobRequest
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.s3 import S3ObjectStore

REPO = Path(__file__).resolve().parents[2]


def test_logs_come_from_the_runs_event_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    @dg.asset
    def probe(context) -> int:  # type: ignore[no-untyped-def]
        context.log.info("probe says hello")
        return 1

    with dg.DagsterInstance.get() as instance:
        run_id = dg.materialize([probe], instance=instance).run_id
    engine = PlatformJobsBackend()
    lines = engine.logs("job-1", run_id)
    assert any("INFO" in line and "probe says hello" in line for line in lines)
    assert all(line.split(" ", 3)[3].strip() for line in lines), lines
    assert engine.logs("job-1", None) == []
    engine.check_ready()


def test_readiness_needs_a_persistent_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(RuntimeError, match="DAGSTER_HOME"):
        PlatformJobsBackend().check_ready()


def test_workloads_come_from_the_core_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's data: real owner and input kinds, newest versions, extra folders too."""
    extra = tmp_path / "extra"
    shutil.copytree(REPO / "workloads" / "transcribe", extra / "transcribe-2")
    manifest = extra / "transcribe-2" / "workload.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.1.0"))
    monkeypatch.setenv("ASR_WORKLOAD_DIRS", str(extra))
    found = {w.ref: w for w in PlatformJobsBackend().workloads()}
    assert set(found) == {"letter-scoring:1.1.0", "transcribe:1.0.0", "transcribe:1.1.0"}
    letters = found["letter-scoring:1.1.0"]
    assert (letters.owner, letters.input_kinds) == ("reading-assessment", ["manifest"])
    assert letters.manifest_fields == {"expected_text": "string"}
    assert letters.resources is not None and letters.resources.cpu == "2"
    assert found["transcribe:1.1.0"].input_kinds == ["prefix", "manifest"]
    assert {"key", "status", "reason_code", "text"} <= set(found["transcribe:1.1.0"].output_columns)


def test_an_invalid_registry_is_an_error_not_a_shorter_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "workload.yaml").write_text("name: [unclosed\n")
    monkeypatch.setenv("ASR_WORKLOAD_DIRS", str(tmp_path))
    with pytest.raises(WorkloadRegistryError, match=r"broken/workload\.yaml"):
        PlatformJobsBackend().workloads()


def test_inputs_are_counted_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_ENV", "local")
    monkeypatch.setenv("ASR_DATA_ROOT", str(tmp_path))
    audio = tmp_path / "tenants" / "team-a" / "in"
    audio.mkdir(parents=True)
    for i in range(7):
        (audio / f"{i}.wav").write_bytes(b"RIFF")
    (audio / "notes.txt").write_text("not audio: the core skips it, so the quota does too")
    (tmp_path / "tenants" / "team-a" / "m.jsonl").write_text(
        "\n".join(json.dumps({"audio_key": f"k{i}"}) for i in range(4)) + "\n\n"
    )
    engine = PlatformJobsBackend()
    by_prefix = JobRequest(
        workload="transcribe:1", input_prefix="tenants/team-a/in/", output_prefix="o/"
    )
    assert engine.count_inputs(by_prefix, limit=100) == 7
    assert engine.count_inputs(by_prefix, limit=3) == 4  # stops past the limit
    by_manifest = JobRequest(workload="t:1", manifest="tenants/team-a/m.jsonl", output_prefix="o/")
    assert engine.count_inputs(by_manifest, limit=100) == 4


def test_s3_locations_become_keys_in_the_platforms_store(tmp_path: Path) -> None:
    """The core takes store keys only; the API takes s3:// URIs too (the CLI's `--input s3://`)."""
    s3 = S3ObjectStore(bucket="audio", prefix="asr", cache_dir=str(tmp_path))
    assert store_key("s3://audio/asr/tenants/a/in/", s3) == "tenants/a/in/"
    assert store_key("tenants/a/in/", s3) == "tenants/a/in/"
    for outside in ("s3://other/asr/tenants/a/", "s3://audio/tenants/a/", "s3://audio/asr/"):
        with pytest.raises(ValueError, match=re.escape(outside)):
            store_key(outside, s3)
    local = LocalObjectStore(root=str(tmp_path))
    with pytest.raises(ValueError, match="not S3"):
        store_key("s3://audio/asr/tenants/a/", local)
    request = JobRequest(
        workload="letter-scoring:1",
        manifest="s3://audio/asr/tenants/a/day.jsonl",
        output_prefix="s3://audio/asr/tenants/a/out/",
        key_prefixes=["s3://audio/asr/tenants/a/", "s3://elsewhere/a/"],
    )
    mapped = in_store_keys(request, s3)
    assert (mapped.manifest, mapped.output_prefix) == ("tenants/a/day.jsonl", "tenants/a/out/")
    assert mapped.key_prefixes == ["tenants/a/"]


def test_submit_hands_the_core_store_keys_and_refuses_foreign_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[JobRequest] = []
    monkeypatch.setattr("asr_assets.platform.jobs.submit", lambda r: seen.append(r) or "job-1")
    engine = PlatformJobsBackend()
    s3 = S3ObjectStore(bucket="audio", cache_dir=str(tmp_path))
    monkeypatch.setattr(engine, "_store", lambda: s3)
    request = JobRequest(
        workload="transcribe:1", input_prefix="s3://audio/t/in/", output_prefix="s3://audio/t/o/"
    )
    assert engine.submit(request) == "job-1"
    assert (seen[0].input_prefix, seen[0].output_prefix) == ("t/in/", "t/o/")
    with pytest.raises(ValueError, match="platform's bucket"):
        engine.submit(request.model_copy(update={"input_prefix": "s3://other/t/in/"}))
    assert len(seen) == 1
