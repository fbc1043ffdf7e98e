"""The synthesizer's labels agree with its audio.

These call libespeak-ng (Debian package ``espeak-ng``); they skip when it is not installed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.support.espeak import needs_espeak
from tools.synthesize.plan import (
    CONFUSABLE,
    LETTERS,
    ErrorRates,
    LetterDeck,
    NoiseSpec,
    PhrasePlan,
    correct_reading,
    draw_phrase,
)
from tools.synthesize.render import Rendered
from tools.synthesize.voices import HELDOUT_VARIANTS, TRAIN_VARIANTS, Voice, voices

pytestmark = needs_espeak

SR = 16_000
REPO_ROOT = Path(__file__).resolve().parents[2]


def _rendered_plans(n: int, seed: int, mode: str) -> list:
    from tools.synthesize.render import render

    rng = np.random.default_rng(seed)
    deck = LetterDeck(rng)
    pool = voices("all")
    rates = ErrorRates(0.15, 0.15, 0.1, 0.05, 0.05)
    out = []
    for _ in range(n):
        voice = pool[int(rng.integers(len(pool)))]
        plan = draw_phrase(rng, deck, voice, rates=rates, render=mode)  # type: ignore[arg-type]
        out.append((plan, render(plan)))
    return out


@pytest.fixture(scope="module")
def whole() -> list:
    return _rendered_plans(40, seed=11, mode="whole")


@pytest.fixture(scope="module")
def spliced() -> list:
    return _rendered_plans(15, seed=12, mode="spliced")


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.synthesize.dataset import generate_sample_day

    root = tmp_path_factory.mktemp("store")
    generate_sample_day(root, seed=5)
    return root


def test_voice_split_is_disjoint_and_fixed() -> None:
    assert not set(TRAIN_VARIANTS) & set(HELDOUT_VARIANTS)
    train, held = set(voices("train")), set(voices("heldout"))
    assert train and held and not train & held
    assert set(voices("all")) == train | held
    assert all(v.heldout for v in held) and not any(v.heldout for v in train)


def test_letter_deck_covers_alphabet_and_favours_confusables() -> None:
    deck = LetterDeck(np.random.default_rng(0))
    first = [deck.draw() for _ in range(26 + len(CONFUSABLE))]
    assert set(first) == set(LETTERS)
    many = [deck.draw() for _ in range(39 * 40)]
    conf = np.mean([many.count(c) for c in CONFUSABLE])
    other = np.mean([many.count(c) for c in set(LETTERS) - CONFUSABLE])
    assert conf == pytest.approx(2 * other)


def test_labels_are_consistent(whole: list, spliced: list) -> None:
    for plan, _ in whole + spliced:
        expected_rows = [lab for lab in plan.labels if lab.status != "inserted"]
        assert [lab.letter_index for lab in expected_rows] == list(range(len(plan.expected)))
        assert [lab.expected_letter for lab in expected_rows] == list(plan.expected)
        spoken_idx = sorted(lab.spoken_index for lab in plan.labels if lab.spoken_index is not None)
        assert spoken_idx == list(range(len(plan.spoken)))
        for lab in plan.labels:
            if lab.status == "deleted":
                assert lab.spoken_index is None and lab.spoken_letter is None
            else:
                assert lab.spoken_letter == plan.spoken[lab.spoken_index]
            if lab.status == "substituted":
                assert lab.spoken_letter != lab.expected_letter
            if lab.status == "correct":
                assert lab.spoken_letter == lab.expected_letter
            if lab.status == "inserted":
                assert lab.expected_letter is None
                assert 0 <= lab.letter_index <= len(plan.expected)


def _check_spans(plan: PhrasePlan, out: Rendered) -> None:
    from tools.synthesize.spans import frame_energy_db

    assert len(out.spans) == len(plan.spoken)
    prev_end = 0.0
    for (s, e), (seg_s, seg_e) in zip(out.spans, out.segments, strict=True):
        assert 0.0 <= s < e <= out.duration_s
        assert s >= prev_end - 1e-9, "spans overlap or are out of order"
        assert seg_s - 1e-4 <= s and e <= seg_e + 1e-4, "span leaves its synthesizer segment"
        assert 0.03 < e - s < 1.5, f"implausible letter duration {e - s:.3f}s"
        clip = out.audio[round(s * SR) : round(e * SR)]
        assert frame_energy_db(clip, SR).max() > -60.0, "span holds no sound"
        prev_end = e


def test_whole_phrase_spans_lie_inside_audio(whole: list) -> None:
    kinds = set()
    for plan, out in whole:
        kinds.add(plan.kind)
        if plan.kind == "normal":
            _check_spans(plan, out)
        else:
            assert out.spans == ()
    assert "normal" in kinds


def test_spliced_spans_are_exact(spliced: list) -> None:
    from tools.synthesize.spans import audible_span, reference_db

    for plan, out in spliced:
        if plan.kind != "normal":
            continue
        _check_spans(plan, out)
        if plan.noise.kind is not None or plan.noise.ramp_db:
            continue
        ref = reference_db(out.audio, SR)
        for s, e in out.spans:
            # a spliced clip is cut at its audible edges, so re-trimming it changes nothing
            # beyond one analysis hop (clips are trimmed against their own peak, not the phrase's)
            again = audible_span(out.audio, SR, s, e, ref, threshold_db=60.0)
            assert again is not None
            assert again[0] - s < 0.0051 and e - again[1] < 0.0051


def test_audio_outside_spans_is_silent_without_noise() -> None:
    """Clean audio of an echo-free voice: everything audible lies inside some letter span."""
    from tools.synthesize.render import render
    from tools.synthesize.spans import frame_energy_db

    rng = np.random.default_rng(3)
    deck = LetterDeck(rng)
    for variant in ("", "m1", "klatt4"):
        plan = draw_phrase(rng, deck, Voice("en-us", variant), rates=ErrorRates.none())
        plan = PhrasePlan(**{**plan.__dict__, "noise": NoiseSpec()})
        out = render(plan)
        mask = np.ones(len(out.audio), dtype=bool)
        for s, e in out.spans:
            mask[max(0, round(s * SR) - 80) : round(e * SR) + 80] = False
        outside = out.audio[mask]
        peak_db = frame_energy_db(out.audio, SR).max()
        assert frame_energy_db(outside, SR).max() < peak_db - 40.0


def test_span_durations_do_not_depend_on_pauses() -> None:
    """Event-derived spans: the same letters read with and without pauses have equal lengths.

    A boundary error in the word/phoneme events would show up as a letter that absorbs the pause.
    """
    from tools.synthesize.render import render

    for variant in ("", "f3", "klatt2"):  # f3 has an echo, klatt2 is formant-synthesized
        spoken, labels = correct_reading(("w", "a", "l", "m", "q", "e"))
        base = PhrasePlan(
            expected=spoken,
            kind="normal",
            spoken=spoken,
            labels=labels,
            voice=Voice("en-gb", variant),
            pauses_ms=(0,) * 6,
            letter_rate_pct=(100,) * 6,
        )
        tight = render(base)
        loose = render(PhrasePlan(**{**base.__dict__, "pauses_ms": (400,) * 6}))
        for (s0, e0), (s1, e1) in zip(tight.spans, loose.spans, strict=True):
            assert abs((e0 - s0) - (e1 - s1)) < 0.011
        assert loose.duration_s > tight.duration_s + 1.5


def test_upper_case_letters_are_read_as_names() -> None:
    """espeak-ng reads a bare "A" between letters as the article unless each letter is a clause."""
    from tools.synthesize.espeak import Espeak
    from tools.synthesize.render import phrase_ssml

    syn = Espeak.get().synthesize(phrase_ssml(("b", "a", "c"), (0, 0, 0), (100, 100, 100)), "en-us")
    assert len(syn.words) == 3
    assert "eI" in [p.name for p in syn.words[1].phonemes]


def test_silent_and_noise_only_phrases() -> None:
    from tools.synthesize.render import render

    rng = np.random.default_rng(4)
    deck = LetterDeck(rng)
    silent = draw_phrase(rng, deck, Voice("en-us"), rates=ErrorRates(0, 0, 0, 0, 1.0))
    noisy = draw_phrase(rng, deck, Voice("en-us"), rates=ErrorRates(0, 0, 0, 1.0, 0))
    assert silent.kind == "silent" and noisy.kind == "noise_only"
    for plan in (silent, noisy):
        assert plan.spoken == ()
        assert all(lab.status == "deleted" for lab in plan.labels)
    s, n = render(silent), render(noisy)
    assert s.duration_s > 0.5 and float(np.abs(s.audio).max()) == 0.0
    assert float(np.sqrt(np.mean(n.audio**2))) > 1e-3


def test_sample_store_matches_contract(sample_store: Path) -> None:
    root = sample_store
    parts = list((root / "catalog" / "activities").glob("activity_date=*/part-0.parquet"))
    assert [p.parent.name for p in parts] == ["activity_date=2026-11-27"]
    cat = pq.read_table(parts[0])
    assert [(f.name, str(f.type)) for f in cat.schema] == [
        ("activity_id", "string"),
        ("tenant_id", "string"),
        ("student_id", "string"),
        ("activity_date", "date32[day]"),
        ("phrase_index", "int32"),
        ("expected_text", "string"),
        ("audio_key", "string"),
        ("audio_start_s", "double"),
        ("audio_end_s", "double"),
        ("created_at", "timestamp[us, tz=UTC]"),
    ]
    rows = cat.to_pylist()
    assert len({r["activity_id"] for r in rows}) == 6
    assert len({r["tenant_id"] for r in rows}) == 2
    assert all(r["activity_date"] == dt.date(2026, 11, 27) for r in rows)
    assert all(re.fullmatch(r"[a-z]( [a-z])*", r["expected_text"]) for r in rows)

    truth = {
        (r["activity_id"], r["phrase_index"]): r
        for r in pq.read_table(root / "ground_truth" / "phrases.parquet").to_pylist()
    }
    letters = pq.read_table(root / "ground_truth" / "letters.parquet").to_pylist()
    assert {lab["true_status"] for lab in letters} == {
        "correct",
        "substituted",
        "deleted",
        "inserted",
    }
    kinds = [t["kind"] for t in truth.values()]
    assert {"normal", "silent", "noise_only", "corrupt"} <= set(kinds)
    assert sum(r["audio_start_s"] is not None for r in rows) >= 4  # the one-file activity

    for r in rows:
        t = truth[(r["activity_id"], r["phrase_index"])]
        path = root / r["audio_key"]
        assert path.is_file()
        if t["kind"] == "corrupt":
            assert path.suffix == ".wav"
            with pytest.raises(sf.LibsndfileError):
                sf.info(str(path))
            continue
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        if r["audio_start_s"] is not None:
            assert r["audio_end_s"] - r["audio_start_s"] == pytest.approx(t["duration_s"], abs=1e-3)
            assert r["audio_end_s"] <= len(audio) / sr + 1e-6
            audio = audio[round(r["audio_start_s"] * sr) : round(r["audio_end_s"] * sr)]
        assert len(audio) / sr == pytest.approx(t["duration_s"], abs=0.06)
        mono = audio.mean(axis=1)
        for lab in letters:
            if (lab["activity_id"], lab["phrase_index"]) != (r["activity_id"], r["phrase_index"]):
                continue
            if lab["true_status"] == "deleted":
                assert lab["true_start_s"] is None and lab["true_end_s"] is None
                continue
            assert 0.0 <= lab["true_start_s"] < lab["true_end_s"] <= t["duration_s"] + 1e-6
            seg = mono[round(lab["true_start_s"] * sr) : round(lab["true_end_s"] * sr)]
            assert np.sqrt(np.mean(seg**2)) > 1e-4
        if t["kind"] == "silent":
            assert float(np.abs(mono).max()) < 1e-3


def test_scripted_sample_cases(sample_store: Path) -> None:
    """Activity 0 of the sample day holds the four hand-checkable cases, in order."""
    letters = pq.read_table(sample_store / "ground_truth" / "letters.parquet").to_pylist()
    cat = pq.read_table(next((sample_store / "catalog").rglob("part-0.parquet"))).to_pylist()
    first = cat[0]["activity_id"]
    by_phrase: dict[int, list[str]] = {}
    for lab in letters:
        if lab["activity_id"] == first:
            by_phrase.setdefault(lab["phrase_index"], []).append(lab["true_status"])
    assert set(by_phrase[0]) == {"correct"}
    assert "substituted" in by_phrase[1]
    assert "deleted" in by_phrase[2]
    assert "inserted" in by_phrase[3]


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _generate_in_fresh_process(root: Path, seed: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.synthesize",
            "sample-day",
            "--out",
            str(root),
            "--seed",
            str(seed),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    """Same command and seed, same bytes (audio, Parquet, ids, timestamps).

    Each run is a fresh process: libespeak-ng keeps internal synthesis state (pitch flutter
    phase) across calls, so determinism holds per command, not per call inside a busy process.
    """
    _generate_in_fresh_process(tmp_path / "one", 5)
    _generate_in_fresh_process(tmp_path / "two", 5)
    _generate_in_fresh_process(tmp_path / "other", 6)
    assert _tree_digest(tmp_path / "one") == _tree_digest(tmp_path / "two")
    assert _tree_digest(tmp_path / "other") != _tree_digest(tmp_path / "one")
