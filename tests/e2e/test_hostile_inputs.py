"""A corpus of hostile inputs in one partition: each gets its reason code, none crashes the run.

The corpus is generated here: broken and deceptive audio (zero bytes, truncated headers, wrong
extensions, non-audio bytes, 8 kHz stereo, a 10-minute file, NaN and infinite samples, a huge
declared length, an oversized object), keys that try to leave the store (path traversal,
absolute and Windows paths, control characters, overlong keys), SQL-injection strings in
`expected_text` and tenant ids, non-ASCII letters and malformed catalog rows. Each phrase must
come out of the partition as exactly one row: an error row with the expected reason code, or a
scored row when the input is harmless data (a SQL-looking tenant id is just a tenant id).

The same committed partition then meets a full disk: the rerun fails fast, without step
retries, and the committed partition is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from asr_assets.assets.letter_scores import verify_partition
from asr_assets.core.storage import result_prefix
from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.resources.catalog import DuckDBActivityCatalog
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

pytestmark = pytest.mark.e2e

DAY = "2026-11-27"
SCORED = "scored"
MAX_OBJECT_MB = 8.0
SQL_TENANT = "x' OR '1'='1"


@dataclass(frozen=True)
class Case:
    spec: PhraseSpec
    expected: str  # a reason code, or SCORED


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    return bytes(out)


def hostile_corpus() -> dict[str, Case]:
    good = wav_bytes(tone(1.0))
    rng = np.random.default_rng(7)
    audio: dict[str, tuple[bytes, str, str]] = {
        # name: (bytes, file extension, expected outcome)
        "zero_bytes": (b"", "wav", "audio_empty"),
        "truncated_header": (good[:30], "wav", "audio_undecodable"),
        "truncated_mid_data": (good[:8000], "wav", "audio_too_short"),
        "riff_without_data": (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav", "audio_undecodable"),
        "text_not_audio": (b"definitely not audio, just text\n" * 20, "wav", "audio_undecodable"),
        "png_bytes": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 300, "wav", "audio_undecodable"),
        "id3_header_only": (
            b"ID3\x03\x00\x00\x00\x00\x00\x10" + b"\x00" * 200,
            "mp3",
            "audio_undecodable",
        ),
        "random_bytes": (
            rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
            "flac",
            "audio_undecodable",
        ),
        "zero_channels": (_patched(good, 22, b"\x00\x00"), "wav", "audio_undecodable"),
        "zero_sample_rate": (_patched(good, 24, b"\x00\x00\x00\x00"), "wav", "audio_undecodable"),
        "flac_named_wav": (wav_bytes(tone(1.0), fmt="FLAC"), "wav", SCORED),
        "ogg_named_mp3": (
            wav_bytes(tone(1.0, rate=22_050), rate=22_050, fmt="OGG", subtype="VORBIS"),
            "mp3",
            SCORED,
        ),
        "stereo_8khz": (
            wav_bytes(
                np.stack([tone(1.0, rate=8000), tone(1.0, rate=8000, freq=300)], axis=1), rate=8000
            ),
            "wav",
            SCORED,
        ),
        "ten_minutes": (
            wav_bytes(tone(600.0, rate=8000, level=0.2), rate=8000, fmt="FLAC"),
            "flac",
            "audio_too_long",
        ),
        "oversized_object": (
            rng.integers(0, 256, int((MAX_OBJECT_MB + 1) * 1024 * 1024), dtype=np.uint8).tobytes(),
            "wav",
            "audio_too_large",
        ),
        "nan_samples": (
            wav_bytes(
                np.where(np.arange(16_000) % 100 == 0, np.nan, 0.1).astype(np.float32),
                subtype="FLOAT",
            ),
            "wav",
            "audio_non_finite",
        ),
        "inf_samples": (
            wav_bytes(
                np.where(np.arange(16_000) % 50 == 0, np.inf, 0.1).astype(np.float32),
                subtype="FLOAT",
            ),
            "wav",
            "audio_non_finite",
        ),
        # libsndfile clamps a data chunk that claims ~4 GB to the bytes actually there.
        "huge_declared_length": (
            _patched(good, 40, (0xFFFFFFF0).to_bytes(4, "little")),
            "wav",
            SCORED,
        ),
        "header_only": (wav_bytes(np.zeros(0, dtype=np.float32)), "wav", "audio_empty"),
        "one_sample": (wav_bytes(np.array([0.1], dtype=np.float32)), "wav", "audio_too_short"),
        "silence": (wav_bytes(np.zeros(16_000, dtype=np.float32)), "wav", "audio_silent"),
        "clipped_square": (wav_bytes(np.ones(16_000, dtype=np.float32)), "wav", "audio_clipped"),
    }
    cases: dict[str, Case] = {}
    for name, (data, extension, expected) in audio.items():
        spec = PhraseSpec(f"h-{name}", 0, "b d", data, f"audio/hostile/{name}.{extension}")
        cases[name] = Case(spec, expected)

    def row(name: str, expected: str, **fields: object) -> None:
        defaults: dict[str, object] = {
            "activity_id": f"h-{name}",
            "phrase_index": 0,
            "expected_text": "b d",
            "audio": None,
            "audio_key": "audio/hostile/flac_named_wav.wav",  # a valid recording
        }
        cases[name] = Case(PhraseSpec(**{**defaults, **fields}), expected)  # type: ignore[arg-type]

    row("missing_object", "audio_missing", audio_key="audio/hostile/no-such-file.wav")
    row("segment_beyond_end", "audio_bad_segment", audio_start_s=30.0, audio_end_s=31.0)
    for name, key in {
        "key_traversal": "../../etc/passwd",
        "key_traversal_inside": "audio/../../secret.wav",
        "key_absolute": "/etc/passwd",
        "key_backslashes": "audio\\..\\..\\x.wav",
        "key_nul": "audio/a\x00b.wav",
        "key_newline": "audio/a\nb.wav",
        "key_escape_sequence": "audio/\x1b[31mred.wav",
        "key_windows_drive": "C:/Windows/win.ini",
        "key_empty_segment": "audio//x.wav",
        "key_overlong": "audio/" + "a" * 2000 + ".wav",
    }.items():
        row(name, "unsafe_audio_key", audio_key=key)
    for name, text in {
        "text_sql_injection": "a'; DROP TABLE activities; --",
        "text_sql_union": "a' UNION SELECT student_id FROM activities --",
        "text_non_ascii": "é ü",
        "text_cyrillic_lookalike": "\u0430 b",
        "text_fullwidth": "\uff41 b",
        "text_upper_case": "B D",
        "text_empty": "",
        "text_double_space": "b  d",
        "text_tab": "b\td",
        "text_digits": "1 2",
    }.items():
        row(name, "invalid_expected_text", expected_text=text)
    row("tenant_sql_injection", SCORED, tenant_id=SQL_TENANT)
    row("tenant_sql_comment", SCORED, tenant_id='t"; DELETE FROM activities; --')
    row("tenant_empty", "malformed_row", tenant_id="")
    row("activity_id_unicode", SCORED, activity_id="h-活动-ü")
    row("activity_id_overlong", "malformed_row", activity_id="h-" + "x" * 300)
    row("phrase_index_negative", "malformed_row", phrase_index=-1)
    row("audio_key_null", "malformed_row", audio_key=None)
    row("segment_start_nan", "malformed_row", audio_start_s=float("nan"), audio_end_s=1.0)
    row("segment_start_only", "malformed_row", audio_start_s=0.5)
    row("student_id_empty", "malformed_row", student_id="")
    # Every row of a key several rows claim is errored; the rest of the day is scored.
    row("duplicate_original", "duplicate_phrase", activity_id="h-duplicate")
    row("duplicate_repeat", "duplicate_phrase", activity_id="h-duplicate")
    row("text_overlong", "expected_text_too_long", expected_text=" ".join("b" * 120))
    for name, key in {
        "key_into_clip_cache": "cache/audio/ab/abcdef.flac",
        "key_into_results": f"results/letter_scores/activity_date={DAY}/_SUCCESS",
        "key_into_catalog": f"catalog/activities/activity_date={DAY}/part-0.parquet",
        "key_into_published": "published/x.jsonl",
    }.items():
        row(name, "unsafe_audio_key", audio_key=key)
    # Symlinks under the store root that leave it (made by the fixture): refused on read.
    row("symlink_to_etc_passwd", "unsafe_audio_key", audio_key="audio/hostile/link-passwd.wav")
    row("symlink_dir_outside", "unsafe_audio_key", audio_key="audio/hostile/outside/x.wav")
    row("segment_end_beyond_end", "audio_bad_segment", audio_start_s=0.0, audio_end_s=30.0)
    dc = wav_bytes(np.full(32_000, 0.5, dtype=np.float32))
    cases["dc_offset"] = Case(
        PhraseSpec("h-dc_offset", 0, "b d", dc, "audio/hostile/dc.wav"), "audio_silent"
    )
    return cases


CORPUS = hostile_corpus()


def _key(case: Case) -> tuple[str, int]:
    return (case.spec.activity_id, case.spec.phrase_index)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    root = tmp_path_factory.mktemp("hostile")
    write_day(root, date.fromisoformat(DAY), [case.spec for case in CORPUS.values()])
    outside = tmp_path_factory.mktemp("outside-the-store")
    (outside / "x.wav").write_bytes(wav_bytes(tone(1.0)))
    (root / "audio" / "hostile" / "link-passwd.wav").symlink_to("/etc/passwd")
    (root / "audio" / "hostile" / "outside").symlink_to(outside)
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            partition_key=DAY,
            resources=definitions.resources,
            instance=instance,
            run_config={"ops": {"phrase_audio": {"config": {"max_object_mb": MAX_OBJECT_MB}}}},
        )
        yield root, result, definitions, instance


def test_the_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 30
    assert sum(case.expected != SCORED for case in CORPUS.values()) >= 30


def test_no_input_crashes_the_partition(hostile_run) -> None:
    _, result, _, _ = hostile_run
    assert result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_input_gets_its_outcome(hostile_run, name: str) -> None:
    _, _, definitions, _ = hostile_run
    outcomes = _outcomes(definitions.resources["store"])
    case = CORPUS[name]
    if name.startswith("duplicate_"):  # the repeat shares its key with the original
        assert outcomes[_key(case)] == ["duplicate_phrase", "duplicate_phrase"]
        return
    assert outcomes[_key(case)] == [case.expected], name


_outcome_cache: dict[str, dict[tuple[str, int], list[str]]] = {}


def _outcomes(store: LocalObjectStore) -> dict[tuple[str, int], list[str]]:
    """(activity_id, phrase_index) -> outcomes in the committed partition (read once)."""
    if store.root not in _outcome_cache:
        manifest = store.read_committed(result_prefix("letter_scores", DAY))
        assert manifest is not None
        outcomes: dict[tuple[str, int], list[str]] = {}
        for row in store.read_table(manifest["files"]["phrase_results"]).to_pylist():  # type: ignore[index]
            outcomes.setdefault((row["activity_id"], row["phrase_index"]), []).append(SCORED)
        for row in store.read_table(manifest["files"]["errors"]).to_pylist():  # type: ignore[index]
            outcomes.setdefault((row["activity_id"], row["phrase_index"]), []).append(
                row["reason_code"]
            )
        _outcome_cache[store.root] = outcomes
    return _outcome_cache[store.root]


def test_every_phrase_is_accounted_for_exactly_once(hostile_run) -> None:
    _, _, definitions, _ = hostile_run
    store = definitions.resources["store"]
    verification = verify_partition(store, DAY, expected=[_key(c) for c in CORPUS.values()])
    assert verification.ok, verification
    assert verification.lost == 0
    assert verification.phrases_expected == len(CORPUS)


def test_sql_looking_tenant_ids_are_data(hostile_run) -> None:
    root, _, definitions, _ = hostile_run
    store = definitions.resources["store"]
    manifest = store.read_committed(result_prefix("letter_scores", DAY))
    tenants = {
        r["tenant_id"] for r in store.read_table(manifest["files"]["phrase_results"]).to_pylist()
    }
    assert SQL_TENANT in tenants and 't"; DELETE FROM activities; --' in tenants
    # Bound, not formatted: the injection selects its own row and nothing else.
    only = DuckDBActivityCatalog(root=str(root)).fetch_activities(DAY, [SQL_TENANT])
    assert only.column("activity_id").to_pylist() == ["h-tenant_sql_injection"]


def test_nothing_was_written_outside_the_store(hostile_run) -> None:
    root, _, _, _ = hostile_run
    assert not (root.parent / "secret.wav").exists()
    assert not any(p.name == "passwd" for p in root.rglob("*"))


def test_a_full_disk_fails_fast_and_keeps_the_committed_partition(hostile_run) -> None:
    root, committed, definitions, instance = hostile_run
    full = LocalObjectStore(root=str(root), min_free_bytes=2**62)  # no disk is that big
    result = dg.materialize(
        ALL_ASSETS,
        partition_key=DAY,
        resources={**definitions.resources, "store": full},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "activities"
    assert "InsufficientSpaceError" in str(failure.step_failure_data.error)
    assert "reserve" in str(failure.step_failure_data.error)
    store = definitions.resources["store"]
    manifest = store.read_committed(result_prefix("letter_scores", DAY))
    assert manifest is not None and manifest["run_id"] == committed.run_id
    assert verify_partition(store, DAY, expected=[_key(c) for c in CORPUS.values()]).ok
