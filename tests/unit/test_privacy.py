"""Privacy building blocks: keyed hashes, retention (TTL, size cap, dry run, the scheduled job),
the append-only audit log, JSON scrubbing and the local publisher's retract."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.assets.privacy import privacy_retention
from asr_assets.core.models import ActivityResult
from asr_assets.core.privacy import (
    ERASED,
    AuditAction,
    DataClass,
    PrivacyConfigError,
    RetentionPolicy,
    RetentionRule,
    SubjectKind,
    expired,
    scrub_json,
    subject_hash,
)
from asr_assets.definitions import build_definitions
from asr_assets.platform import privacy as privacy_cli
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.privacy import audit_event, read_audit, record_access, sweep_retention
from asr_assets.resources.publisher import LocalJsonlPublisher

KEY = b"k" * 32
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_subject_hash_is_keyed_and_never_the_id() -> None:
    hashed = subject_hash(KEY, SubjectKind.STUDENT, "kid-1")
    assert "kid-1" not in hashed and len(hashed) == 64
    assert hashed == subject_hash(KEY, "student_id", "kid-1")
    assert hashed != subject_hash(b"j" * 32, SubjectKind.STUDENT, "kid-1")
    assert hashed != subject_hash(KEY, SubjectKind.ACTIVITY, "kid-1")
    with pytest.raises(PrivacyConfigError):
        subject_hash(b"short", SubjectKind.STUDENT, "kid-1")


def test_expired_applies_the_ttl_then_the_size_cap_oldest_first() -> None:
    rule = RetentionRule(
        data_class=DataClass.AUDIO_CACHE, prefixes=["cache/"], ttl_days=10, max_bytes=250
    )
    objects = [
        ("old", 100, NOW - timedelta(days=11)),
        ("b", 100, NOW - timedelta(days=3)),
        ("a", 100, NOW - timedelta(days=2)),
        ("new", 100, NOW - timedelta(hours=1)),
    ]
    assert expired(objects, rule, NOW) == ["old", "b"]
    uncapped = rule.model_copy(update={"max_bytes": None})
    assert expired(objects, uncapped, NOW) == ["old"]


def _plant(root: Path, key: str, age_days: float, size: int = 10) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = (datetime.now(UTC) - timedelta(days=age_days)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


POLICY = RetentionPolicy(
    rules=[
        RetentionRule(data_class=DataClass.RAW_AUDIO, prefixes=["audio/"], ttl_days=30),
        RetentionRule(
            data_class=DataClass.EMISSIONS_CACHE,
            prefixes=["cache/emissions/"],
            ttl_days=7,
            max_bytes=15,
        ),
    ]
)


def test_retention_sweep_dry_run_then_for_real(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    old_audio = _plant(tmp_path, "audio/a/old.wav", 31)
    new_audio = _plant(tmp_path, "audio/a/new.wav", 1)
    old_emission = _plant(tmp_path, "cache/emissions/m/aa/old.npz", 8)
    mid_emission = _plant(tmp_path, "cache/emissions/m/aa/mid.npz", 2)
    new_emission = _plant(tmp_path, "cache/emissions/m/aa/new.npz", 1)
    results = _plant(tmp_path, "results/letter_scores/activity_date=2020-01-01/p.parquet", 999)

    dry = sweep_retention(store, POLICY, now=datetime.now(UTC), dry_run=True)
    assert dry.counts == {"raw_audio": 1, "emissions_cache": 2}
    assert all(p.exists() for p in (old_audio, old_emission, mid_emission))

    real = sweep_retention(store, POLICY, now=datetime.now(UTC), dry_run=False)
    assert real.doomed == dry.doomed
    assert not old_audio.exists() and not old_emission.exists() and not mid_emission.exists()
    assert new_audio.exists() and new_emission.exists() and results.exists()


def test_the_retention_job_honours_dry_run_and_leaves_an_audit_record(tmp_path: Path) -> None:
    old_audio = _plant(tmp_path, "audio/a/old.wav", 400)
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    for dry_run in (True, False):
        result = privacy_retention.execute_in_process(
            run_config={"ops": {"retention_sweep": {"config": {"dry_run": dry_run}}}},
            resources={"store": store},
        )
        assert result.success
        assert result.output_for_node("retention_sweep")["raw_audio"] == 1
        assert old_audio.exists() is dry_run
    events = read_audit(store)
    assert [e.action for e in events] == [AuditAction.RETENTION_SWEEP] * 2
    assert sorted(e.purpose for e in events) == ["dry run", "scheduled retention"]


def test_definitions_register_the_retention_job_and_schedule(tmp_path: Path) -> None:
    local = build_definitions({"ASR_DATA_ROOT": str(tmp_path)})
    assert local.resolve_job_def("privacy_retention") is not None
    schedule = local.resolve_schedule_def("privacy_retention_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_audit_log_is_append_only_and_holds_no_identifier(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    hashed = subject_hash(KEY, SubjectKind.STUDENT, "kid-1")
    keys = [
        record_access(
            store,
            audit_event(
                actor="api:tenant-a",
                action=AuditAction.READ_AUDIO,
                resource="jobs/job-1",
                purpose="teacher review",
                channel="api",
                subject_hashes=[hashed],
            ),
        )
        for _ in range(3)
    ]
    assert len(set(keys)) == 3
    events = read_audit(store)
    assert len(events) == 3 and all(e.subject_hashes == [hashed] for e in events)
    assert all("kid-1" not in (tmp_path / key).read_text() for key in keys)


def test_scrub_json_drops_the_subjects_records() -> None:
    report = {
        "gates": {
            "g": {
                "failed_expectations": [
                    {"sample_rows": [{"activity_id": "a1", "x": 1}, {"activity_id": "a2"}]}
                ],
                "note": "a1",
            }
        }
    }
    scrubbed, removed = scrub_json(report, {"a1"})
    assert removed == 2
    assert scrubbed == {
        "gates": {
            "g": {"failed_expectations": [{"sample_rows": [{"activity_id": "a2"}]}], "note": ERASED}
        }
    }


def _record(activity: str) -> ActivityResult:
    return ActivityResult(
        activity_id=activity,
        tenant_id="t",
        activity_date=date(2026, 11, 27),
        n_phrases=1,
        n_scored=1,
        n_errors=0,
        n_expected_letters=1,
        n_correct_letters=1,
        accuracy=1.0,
        model_name="m",
        model_version="1",
        model_sha256="a" * 64,
        run_id="r",
        idempotency_key=f"k-{activity}",
        phrases=[],
    )


def test_local_publisher_retracts_records(tmp_path: Path) -> None:
    publisher = LocalJsonlPublisher(store=LocalObjectStore(root=str(tmp_path), min_free_bytes=0))
    publisher.publish("2026-11-27", [_record("a1"), _record("a2")])
    assert publisher.retract("2026-11-27", ["a1", "zz"]) == 1
    path = tmp_path / "published/activity_results/activity_date=2026-11-27.jsonl"
    assert "a1" not in path.read_text() and "a2" in path.read_text()
    assert publisher.retract("2026-11-27", ["a1"]) == 0
    assert publisher.retract("2026-11-27", ["a2"]) == 1
    assert not path.exists()
    assert publisher.retract("2026-11-28", ["a2"]) == 0


def test_erase_refuses_to_run_without_the_hash_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASR_DATA_ROOT", str(tmp_path))
    monkeypatch.delenv("ASR_PRIVACY_HASH_KEY", raising=False)
    assert privacy_cli.main(["erase", "--student-id", "kid-1"]) == 2
    assert not (tmp_path / "privacy").exists()


def test_retention_cli_dry_run_and_policy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    monkeypatch.setenv("ASR_DATA_ROOT", str(tmp_path))
    old = _plant(tmp_path, "audio/x/old.wav", 100)
    assert privacy_cli.main(["retention", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"]["raw_audio"] == 1
    assert old.exists()
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - {data_class: raw_audio, prefixes: ['audio/'], ttl_days: 365}\n")
    assert privacy_cli.main(["retention", "--policy", str(policy)]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == {"raw_audio": 0}
    assert old.exists()
    assert privacy_cli.main(["retention"]) == 0
    assert not old.exists()
