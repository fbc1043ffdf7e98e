"""`asr erase`: a student planted in three scored days leaves no trace anywhere in the store."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.assets.letter_scores import verify_partition
from asr_assets.core.privacy import SubjectKind, subject_hash
from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.platform import cli
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.privacy import read_audit
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

pytestmark = pytest.mark.e2e

DAYS = [date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]
STUDENT = "kid-ERASE-zq81x"
KEEP = "kid-keep-2b"
HASH_KEY = "test-privacy-key-0123456789abcdef"


def _day(root: Path, day: date) -> None:
    stamp = day.strftime("%m%d")
    write_day(
        root,
        day,
        [
            PhraseSpec(
                f"erase-act-{stamp}",
                0,
                "b d",
                wav_bytes(tone(1.1, freq=210 + day.day)),
                f"audio/erase-act-{stamp}/0.wav",
                student_id=STUDENT,
            ),
            PhraseSpec(
                f"erase-act-{stamp}",
                1,
                "p q",
                wav_bytes(tone(1.3, freq=190 + day.day)),
                f"audio/erase-act-{stamp}/1.wav",
                student_id=STUDENT,
            ),
            PhraseSpec(
                f"keep-act-{stamp}",
                0,
                "m n",
                wav_bytes(tone(1.2, freq=300 + day.day)),
                f"audio/keep-act-{stamp}/0.wav",
                student_id=KEEP,
            ),
        ],
    )


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _traces(root: Path, needles: list[str], digests: set[str]) -> list[str]:
    """Every place a needle (an id, a key) or a planted file's bytes still appears."""
    found: list[str] = []
    for path in _files(root):
        relative = str(path.relative_to(root))
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() in digests:
            found.append(f"{relative}: planted bytes")
        texts = [relative, data.decode("utf-8", errors="replace")]
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        for needle in needles:
            if any(needle in text for text in texts):
                found.append(f"{relative}: {needle}")
    return found


@pytest.fixture
def scored_store(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    for day in DAYS:
        _day(root, day)
    environ = {"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(tiny_model_dir)}
    definitions = build_definitions(environ)
    with dg.instance_for_test() as instance:
        for day in DAYS:
            result = dg.materialize(
                ALL_ASSETS,
                partition_key=day.isoformat(),
                resources=definitions.resources,
                instance=instance,
            )
            assert result.success
    for name, value in {**environ, "ASR_PRIVACY_HASH_KEY": HASH_KEY}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ASR_ACTOR", "test:dpo")
    return root


def test_erasure_leaves_no_trace_and_is_idempotent(scored_store: Path) -> None:
    root = scored_store
    stamps = [d.strftime("%m%d") for d in DAYS]
    erased_activities = [f"erase-act-{s}" for s in stamps]
    planted: set[str] = set()
    derived: list[str] = []
    for day in DAYS:
        stage = root / "stages" / "phrase_audio" / f"activity_date={day.isoformat()}"
        for row in pq.read_table(next(stage.glob("*.parquet"))).to_pylist():
            if row["activity_id"].startswith("erase-act-"):
                derived.append(row["clip_key"])
                planted.add(hashlib.sha256((root / row["clip_key"]).read_bytes()).hexdigest())
        stage = root / "stages" / "transcripts" / f"activity_date={day.isoformat()}"
        for row in pq.read_table(next(stage.glob("*.parquet"))).to_pylist():
            if row["activity_id"].startswith("erase-act-"):
                derived.append(row["emissions_key"])
    for path in (root / "audio").rglob("*.wav"):
        if "erase-act-" in str(path):
            planted.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(planted) == 12 and all((root / key).is_file() for key in derived)
    needles = [STUDENT, *erased_activities, *derived]
    # Planted everywhere before: catalog, stages, results, ledger, published, caches, audio.
    before = _traces(root, needles, planted)
    assert any(t.startswith("published/") for t in before)
    assert any(t.startswith("ledger/") for t in before)
    assert any(t.startswith("results/") for t in before)

    assert cli.main(["erase", "--student-id", STUDENT, "--reason", "parent request"]) == 0

    assert _traces(root, needles, planted) == []
    store = LocalObjectStore(root=str(root))
    for day in DAYS:
        stamp = day.strftime("%m%d")
        report = verify_partition(store, day.isoformat())
        assert report.ok, report
        assert report.phrases_expected == 1  # the other student's phrase is still scored
        published = (root / "published" / "activity_results").glob(f"*{day.isoformat()}*")
        assert f"keep-act-{stamp}" in next(published).read_text()
        assert (root / "audio" / f"keep-act-{stamp}" / "0.wav").is_file()
    hashed = subject_hash(HASH_KEY.encode(), SubjectKind.STUDENT, STUDENT)
    receipt = json.loads((root / "privacy" / "erasures" / f"{hashed}.json").read_text())
    assert receipt["removed"]["audio_objects"] == 6
    assert receipt["removed"]["published_records"] == 3
    assert receipt["removed"]["catalog_rows"] == 6
    assert receipt["partitions"] == [d.isoformat() for d in DAYS]
    files_after_first = {p for p in _files(root) if "privacy" not in p.parts}

    # Idempotent: a second run finds nothing and changes nothing but its receipt and audit.
    assert cli.main(["erase", "--student-id", STUDENT]) == 0
    again = json.loads((root / "privacy" / "erasures" / f"{hashed}.json").read_text())
    assert again["removed"] == receipt["removed"]
    assert len(again["runs"]) == 2
    assert {p for p in _files(root) if "privacy" not in p.parts} == files_after_first
    assert _traces(root, needles, planted) == []
    events = read_audit(store)
    assert [e.action.value for e in events] == ["erase", "erase"]
    assert {e.actor for e in events} == {"test:dpo"}
    assert all(e.subject_hashes == [hashed] for e in events)

    # Reading results from the CLI is an audited access too.
    assert cli.main(["summary", DAYS[0].isoformat()]) == 0
    reads = [e for e in read_audit(store) if e.action.value == "read_results"]
    assert len(reads) == 1 and reads[0].actor == "test:dpo" and reads[0].channel == "cli"
    assert reads[0].resource == f"results/activity_date={DAYS[0].isoformat()}"
