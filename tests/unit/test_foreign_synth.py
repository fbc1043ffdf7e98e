"""Cross-synthesizer stores: festival, FreeTTS and flite letters with exact spans, never for training."""

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tools.synthesize.dataset import generate_dataset
from tools.synthesize.foreign import (
    FESTIVAL_TEXT,
    FOREIGN_VOICES,
    ClipBank,
    available,
    find_voice,
    foreign_voices,
    join_clips,
    setting_for,
    trim_clip,
)
from tools.synthesize.plan import LetterDeck, NoiseSpec, draw_phrase
from tools.synthesize.voices import training_voices, voices

SR = 16_000
needs_festival = pytest.mark.skipif(not available("festival"), reason="festival not installed")
needs_freetts = pytest.mark.skipif(not available("freetts"), reason="freetts not installed")
needs_flite = pytest.mark.skipif(not available("flite"), reason="flite not installed")


def test_foreign_voices_are_never_training_voices() -> None:
    names = {v.as_voice.name for v in FOREIGN_VOICES}
    assert names == {
        "festival+kd",
        "festival+us-slt-hts",
        "freetts+kevin16",
        "freetts+kevin",
        "flite+rms",
        "flite+awb",
    }
    trainable = {v.name for v in training_voices(extra_variants=True)}
    assert not names & trainable
    assert not {v.name for v in voices("heldout")} & trainable
    assert {v.synthesizer for v in foreign_voices("festival")} == {"festival"}
    assert find_voice(FOREIGN_VOICES[2].as_voice) is FOREIGN_VOICES[2]


def test_festival_is_asked_for_the_letter_name_of_a() -> None:
    assert FESTIVAL_TEXT["a"] == "Ay" and FESTIVAL_TEXT["b"] == "B"


def test_speaking_rate_picks_slow_normal_fast() -> None:
    assert [setting_for(r) for r in (100, 144, 145, 189, 190, 230)] == [0, 0, 1, 1, 2, 2]


def test_trim_and_join_give_exact_spans() -> None:
    clip = np.concatenate([np.zeros(800), 0.5 * np.sin(np.arange(3200) / 5), np.zeros(800)])
    trimmed = trim_clip(clip.astype(np.float32))
    assert abs(len(trimmed) - 3200) <= 80  # within one analysis frame of the tone
    rng = np.random.default_rng(0)
    plan = draw_phrase(rng, LetterDeck(rng), voices("heldout")[0], length=3, noise_prob=0.0)
    plan = replace(
        plan,
        kind="normal",
        spoken=("b", "d", "p"),
        pauses_ms=(100, 250, 0),
        lead_s=0.3,
        tail_s=0.2,
        noise=NoiseSpec(),
    )
    out = join_clips([trimmed, trimmed, trimmed], plan)
    n = len(trimmed) / SR
    assert out.spans[0] == pytest.approx((0.3, 0.3 + n))
    assert out.spans[1][0] == pytest.approx(0.3 + n + 0.1)
    assert out.spans[2][0] == pytest.approx(0.3 + 2 * n + 0.35)
    assert out.duration_s == pytest.approx(0.3 + 3 * n + 0.35 + 0.2, abs=1e-3)
    start, end = (round(t * SR) for t in out.spans[1])
    assert np.abs(out.audio[start : start + 200]).max() > 0.01
    assert np.abs(out.audio[end : end + 100]).max() == 0.0  # the pause after the letter


@needs_festival
def test_festival_store_has_exact_spans_and_its_voice(tmp_path: Path) -> None:
    bank = ClipBank(tmp_path / "clips")
    clips = bank.clips(FOREIGN_VOICES[0], 1)
    assert sorted(clips) == list("abcdefghijklmnopqrstuvwxyz")
    assert all(0.1 < len(c) / SR < 1.0 for c in clips.values())
    store = tmp_path / "store"
    counts = generate_dataset(
        store,
        seed=3,
        start_date=dt.date(2026, 11, 2),
        activities_per_day=2,
        phrases_range=(2, 2),
        noise_prob=0.0,
        voice_pool=[v.as_voice for v in foreign_voices("festival")],
        renderer=bank.render,
    )
    assert counts["phrases"] == 4
    phrases = pq.read_table(store / "ground_truth" / "phrases.parquet").to_pylist()
    assert {p["voice"] for p in phrases} <= {"festival+kd", "festival+us-slt-hts"}
    letters = pq.read_table(store / "ground_truth" / "letters.parquet").to_pylist()
    timed = [r for r in letters if r["true_start_s"] is not None]
    assert timed and all(r["true_start_s"] < r["true_end_s"] for r in timed)


@needs_freetts
def test_freetts_clips_are_synthesized_once_and_cached(tmp_path: Path) -> None:
    bank = ClipBank(tmp_path, letters="aw")
    clips = bank.clips(FOREIGN_VOICES[2], 0)
    assert sorted(clips) == ["a", "w"] and len(clips["w"]) > len(clips["a"]) > 0.1 * SR
    assert len(list((tmp_path / "freetts" / "kevin16" / "s0").glob("*.wav"))) == 2
    again = ClipBank(tmp_path, letters="aw").clips(FOREIGN_VOICES[2], 0)  # cached: no java
    np.testing.assert_array_equal(again["w"], clips["w"])


@needs_flite
def test_flite_reads_every_letter_at_the_planned_rate_once(tmp_path: Path) -> None:
    rms = next(v for v in foreign_voices("flite") if v.label == "rms")
    bank = ClipBank(tmp_path)
    slow, fast = bank.clips(rms, 0), bank.clips(rms, 2)
    assert sorted(slow) == sorted(fast) == list("abcdefghijklmnopqrstuvwxyz")
    assert all(0.1 < len(c) / SR < 1.5 for c in slow.values())
    # duration_stretch 1.25 against 0.85: the slow setting is really slower
    assert sum(map(len, slow.values())) > 1.25 * sum(map(len, fast.values()))
    assert len(slow["w"]) > 2 * len(slow["e"])  # "double-u" is three syllables, "e" one
    assert len(list((tmp_path / "flite" / "rms" / "s0").glob("*.wav"))) == 26
    again = ClipBank(tmp_path).clips(rms, 0)  # cached: flite is not run again
    np.testing.assert_array_equal(again["w"], slow["w"])
