"""Job inputs, shard output validation, CTC transcription, tags and the Kubernetes pod spec."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import kubernetes
import kubernetes_validate
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_assets.core.transcription import ctc_transcribe
from asr_assets.platform.jobs.api import job_tags
from asr_assets.platform.jobs.launch import k8s_pod_overrides, label_value
from asr_assets.platform.jobs.models import JobRequest, Priority
from asr_assets.platform.jobs.shards import (
    BadOutputError,
    JobInputError,
    build_inputs,
    input_shard_key,
    validate_output,
)
from asr_assets.platform.workloads import WorkloadRegistry
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.data import tone, wav_bytes

REGISTRY = WorkloadRegistry.from_environment({})
LETTERS = REGISTRY.resolve("letter-scoring:1")
TRANSCRIBE = REGISTRY.resolve("transcribe:1")


def _store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path), min_free_bytes=0)


def _manifest(store: LocalObjectStore, key: str, rows: list[dict]) -> None:
    store.write_bytes(key, "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_prefix_inputs_are_listed_probed_and_sharded(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i in range(5):
        store.write_bytes(f"in/a/{i}.wav", wav_bytes(tone(0.5 + i * 0.1)))
    store.write_bytes("in/a/readme.txt", b"x")
    store.write_bytes("other/0.wav", wav_bytes(tone(0.5)))
    request = JobRequest(workload="transcribe:1", input_prefix="in", output_prefix="out/j")
    plan = build_inputs(store, "j1", request, TRANSCRIBE, shard_size=2)
    assert (plan.files, plan.accepted, plan.shards) == (5, 5, 3)
    assert plan.audio_seconds == pytest.approx(sum(0.5 + i * 0.1 for i in range(5)), abs=0.01)
    first = store.read_table(input_shard_key("out/j", 0)).to_pylist()
    assert [r["key"] for r in first] == ["in/a/0.wav", "in/a/1.wav"]
    again = build_inputs(store, "j1", request, TRANSCRIBE, shard_size=1)
    assert again.cached and again.shards == 3  # a rerun sees the same shards


def test_hostile_manifest_rows_are_refused_with_reasons(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write_bytes("team/a.wav", wav_bytes(tone(0.5)))
    store.write_bytes("elsewhere/b.wav", wav_bytes(tone(0.5)))
    rows = [
        {"key": "team/a.wav", "expected_text": "a"},
        {"key": "elsewhere/b.wav", "expected_text": "a"},
        {"key": "team/../elsewhere/b.wav", "expected_text": "a"},
        {"key": "team/missing.wav", "expected_text": "a"},
        {"key": "team/a.wav"},
        {"expected_text": "a"},
    ]
    _manifest(store, "team/m.jsonl", rows)
    store.write_bytes("team/m.jsonl", store.read_bytes("team/m.jsonl") + b"{not json\n")
    request = JobRequest(workload="letter-scoring:1", manifest="team/m.jsonl", output_prefix="o")
    plan = build_inputs(store, "j", request, LETTERS, shard_size=10)
    assert plan.files == 7 and plan.accepted == 1
    assert plan.rejected_by_reason == {
        "key_outside_prefix": 1,
        "unsafe_audio_key": 1,
        "audio_missing": 1,
        "missing_field": 1,
        "malformed_row": 2,
    }
    rejected = store.read_table("o/_job/inputs/rejected.parquet").to_pylist()
    assert len(rejected) == 6


def test_empty_prefix_and_wrong_input_kind_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(JobInputError, match="holds no audio"):
        build_inputs(
            store,
            "j",
            JobRequest(workload="transcribe:1", input_prefix="nothing", output_prefix="o"),
            TRANSCRIBE,
            10,
        )
    with pytest.raises(JobInputError, match="reads a manifest"):
        build_inputs(
            store,
            "j",
            JobRequest(workload="letter-scoring:1", input_prefix="x", output_prefix="o"),
            LETTERS,
            10,
        )


def _peak_bytes(tmp_path: Path, count: int) -> int:
    store = _store(tmp_path / str(count))
    store.write_bytes("m/a.wav", wav_bytes(tone(0.3)))
    body = "".join(
        json.dumps({"key": "m/a.wav", "expected_text": "a b c", "pad": "x" * 1000}) + "\n"
        for _ in range(count)
    )
    store.write_bytes("m/list.jsonl", body.encode())
    request = JobRequest(
        workload="letter-scoring:1",
        manifest="m/list.jsonl",
        output_prefix="o",
        params={"probe_durations": "false"},  # keeps the test fast; probing is tested above
    )
    tracemalloc.start()
    plan = build_inputs(store, "j", request, LETTERS, shard_size=500)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert plan.accepted == count
    return peak - len(body)  # the manifest's own bytes are read once, as one buffer


def test_a_10k_file_manifest_streams_in_flat_memory(tmp_path: Path) -> None:
    _peak_bytes(tmp_path / "warm", 100)  # lazy imports and caches, not the manifest's rows
    small = _peak_bytes(tmp_path, 1_000)
    large = _peak_bytes(tmp_path, 10_000)
    # Holding the rows would cost >= 12 MB at 10k (each a dict of ~1.3 kB); the slack covers
    # one-off growth of interpreter-wide tables (the interned-string dict resizes once, ~4 MB).
    assert large < small * 1.5 + 5 * 1024 * 1024, (small, large)


def _table(keys: list[str], status: list[str], reasons: list[str | None]) -> pa.Table:
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "status": pa.array(status, pa.string()),
            "reason_code": pa.array(reasons, pa.string()),
        }
    )


SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("reason_code", pa.string())])


def test_shard_output_validation(tmp_path: Path) -> None:
    store = _store(tmp_path)
    good = _table(["a", "b"], ["ok", "error"], [None, "audio_silent"])
    store.write_table("s/good.parquet", good)
    _, errors, ok = validate_output(store, "s/good.parquet", SCHEMA, ["b", "a"])
    assert errors == {"audio_silent": 1} and ok == 1
    with pytest.raises(BadOutputError, match="wrote no output"):
        validate_output(store, "s/none.parquet", SCHEMA, ["a"])
    store.write_bytes("s/garbage.parquet", b"PAR1 nonsense")
    with pytest.raises(BadOutputError, match="not readable Parquet"):
        validate_output(store, "s/garbage.parquet", SCHEMA, ["a"])
    store.write_table("s/schema.parquet", good.drop_columns(["reason_code"]))
    with pytest.raises(BadOutputError, match="missing \\['reason_code'\\]"):
        validate_output(store, "s/schema.parquet", SCHEMA, ["a", "b"])
    with pytest.raises(BadOutputError, match="exactly one row"):
        validate_output(store, "s/good.parquet", SCHEMA, ["a", "b", "c"])
    store.write_table("s/dup.parquet", _table(["a", "a"], ["ok", "ok"], [None, None]))
    with pytest.raises(BadOutputError, match="exactly one row"):
        validate_output(store, "s/dup.parquet", SCHEMA, ["a", "b"])
    store.write_table("s/noreason.parquet", _table(["a"], ["error"], [None]))
    with pytest.raises(BadOutputError, match="breaks the contract"):
        validate_output(store, "s/noreason.parquet", SCHEMA, ["a"])


def test_ctc_transcription_times_chars_and_words() -> None:
    vocab = {0: "<pad>", 1: "|", 2: "H", 3: "I", 4: "<s>"}
    path = [0, 2, 2, 0, 3, 1, 1, 4, 2, 0, 0]
    log_probs = np.log(np.full((len(path), 5), 0.05))
    for t, token in enumerate(path):
        log_probs[t, token] = np.log(0.8)
    result = ctc_transcribe(log_probs, vocab, 0, 0.02, delimiter_id=1, skip_ids=frozenset({4}))
    assert result.text == "HI H"
    assert [c.text for c in result.chars] == ["H", "I", "H"]
    assert (result.chars[0].start_s, result.chars[0].end_s) == (0.02, 0.06)
    assert result.words[0].text == "HI"
    assert (result.words[0].start_s, result.words[0].end_s) == (0.02, 0.1)
    assert result.words[0].confidence == pytest.approx(0.8)
    assert ctc_transcribe(np.zeros((0, 5)), vocab, 0, 0.02).text == ""


def test_job_tags_carry_identity_and_queue_priority() -> None:
    request = JobRequest(
        workload="transcribe:1",
        input_prefix="p",
        output_prefix="o",
        tenant="t1",
        team="ops",
        cost_center="cc-1",
        priority=Priority.HIGH,
        tags={"note": "x", "asr/tenant": "spoofed", "dagster/priority": "99"},
    )
    tags = job_tags(request, "transcribe:1.0.0", "job-1")
    assert tags["asr/tenant"] == "t1" and tags["dagster/priority"] == "10"
    assert tags["asr/job"] == "job-1" and tags["asr/workload"] == "transcribe:1.0.0"
    assert tags["asr/team"] == "ops" and tags["asr/cost-center"] == "cc-1"
    assert tags["dagster/partition"] == "job-1" and tags["note"] == "x"


def test_k8s_pod_spec_from_the_manifest_is_valid_kubernetes() -> None:
    from dagster_k8s.pipes import build_pod_body

    gpu = LETTERS.model_copy(update={"resources": LETTERS.resources.model_copy(update={"gpu": 1})})
    tags = {"asr/job": "job-1", "asr/tenant": "Tenant A!", "asr/cost-center": "cc-42"}
    meta, spec = k8s_pod_overrides(gpu, tags, service_account="asr-workloads", shard=3)
    assert meta["labels"]["asr/tenant"] == "Tenant-A"
    assert meta["labels"]["asr/shard"] == "3"
    container = spec["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert spec["serviceAccountName"] == "asr-workloads"
    assert spec["activeDeadlineSeconds"] == 1800
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    pod = build_pod_body(
        "asr-shard-3", gpu.image, list(gpu.command), {"DAGSTER_PIPES_CONTEXT": "x"}, meta, spec
    )
    body = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    body.setdefault("apiVersion", "v1")
    body.setdefault("kind", "Pod")
    kubernetes_validate.validate(body, kubernetes_validate.latest_version(), strict=True)
    assert body["spec"]["containers"][0]["image"] == gpu.image


def test_the_jobs_tags_become_pod_labels() -> None:
    """The run's tags, as `submit` sets them, on the pod: identity labels and the user's own."""
    from dagster_k8s.pipes import build_pod_body

    request = JobRequest(
        workload="transcribe:1",
        input_prefix="in/",
        output_prefix="out/",
        tenant="team-a",
        team="speech",
        cost_center="cc-42",
        priority=Priority.LOW,
        tags={"project": "reading check", "Owner.Email": "a@b.c"},
    )
    tags = job_tags(request, TRANSCRIBE.ref, "job-7")
    meta, spec = k8s_pod_overrides(TRANSCRIBE, tags, shard=0)
    labels = meta["labels"]
    assert {k: labels[k] for k in labels if k.startswith("asr/")} == {
        "asr/job": "job-7",
        "asr/tenant": "team-a",
        "asr/team": "speech",
        "asr/priority": "low",
        "asr/cost-center": "cc-42",
        "asr/workload": "transcribe",
        "asr/workload-version": "1.0.0",
        "asr/shard": "0",
    }
    assert labels["tags.asr/project"] == "reading-check"
    assert labels["tags.asr/Owner.Email"] == "a-b.c"
    assert not any(k.startswith("dagster") or "output-prefix" in k for k in labels)
    pod = build_pod_body("asr-shard-0", TRANSCRIBE.image, list(TRANSCRIBE.command), {}, meta, spec)
    body = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    body.setdefault("apiVersion", "v1")
    body.setdefault("kind", "Pod")
    kubernetes_validate.validate(body, kubernetes_validate.latest_version(), strict=True)
    assert body["metadata"]["labels"]["tags.asr/project"] == "reading-check"


def test_cpu_workload_asks_for_no_gpu() -> None:
    _meta, spec = k8s_pod_overrides(TRANSCRIBE, {})
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "tolerations" not in spec and "serviceAccountName" not in spec


@pytest.mark.parametrize(
    ("value", "expected"), [("ok", "ok"), ("a" * 70, "a" * 63), ("-x-", "x"), ("!!", "none")]
)
def test_label_values(value: str, expected: str) -> None:
    assert label_value(value) == expected


def test_parquet_manifests_stream_too(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write_bytes("p/a.wav", wav_bytes(tone(0.4)))
    table = pa.table({"key": ["p/a.wav"] * 3, "expected_text": ["a", "b", "c"]})
    sink = tmp_path / "p" / "m.parquet"
    pq.write_table(table, sink)
    request = JobRequest(workload="letter-scoring:1", manifest="p/m.parquet", output_prefix="o")
    plan = build_inputs(store, "j", request, LETTERS, 2)
    assert plan.accepted == 3 and plan.shards == 2


def test_the_code_location_carries_the_job_assets_and_job() -> None:
    from asr_assets.platform.location import defs

    definitions = defs()
    job = definitions.resolve_job_def("asr_job")
    assert job.partitions_def is not None and job.partitions_def.name == "jobs"
    keys = {key.to_user_string() for key in definitions.resolve_all_asset_keys()}
    assert {"job_inputs", "job_outputs", "job_report", "letter_scores"} <= keys
    assert {"workloads", "workload_launcher", "store"} <= set(definitions.resources)


def test_a_failing_batch_is_retried_clip_by_clip_so_one_bad_file_fails_alone() -> None:
    from asr_assets.core.errors import PhraseError
    from asr_assets.inference.base import Emissions, InferenceError
    from asr_assets.platform.workloads.letter_scoring import _infer

    class OneBadClipEngine:  # unit-test stand-in: fails any batch holding an empty clip
        def infer(self, clips: list[np.ndarray]) -> list[Emissions]:
            if any(c.size == 0 for c in clips):
                raise InferenceError("empty clip")
            return [Emissions(np.zeros((c.size, 3), np.float32), 0.02) for c in clips]

    clips = [np.ones(4, np.float32), np.zeros(0, np.float32), np.ones(6, np.float32)]
    outputs = _infer(OneBadClipEngine(), clips)  # type: ignore[arg-type]
    assert [type(o).__name__ for o in outputs] == ["Emissions", "PhraseError", "Emissions"]
    assert outputs[2].num_frames == 6
    assert isinstance(outputs[1], PhraseError) and outputs[1].reason == "inference_failed"


def test_letter_scoring_judges_as_the_daily_graph_does_by_default() -> None:
    from asr_assets.assets.alignments import AlignmentsConfig
    from asr_assets.core.scoring import RAW_POLICY
    from asr_assets.platform.workloads.letter_scoring import judgement_policy

    assert judgement_policy("calibrated") == AlignmentsConfig().policy()
    assert judgement_policy("greedy") is None and judgement_policy("raw") is RAW_POLICY
    with pytest.raises(ValueError):
        judgement_policy("lenient")
