"""espeak-ng's MBROLA voices: read at their own sample rate, always spliced, training-only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.espeak import needs_mbrola
from tools.synthesize.espeak import TARGET_SR, Espeak
from tools.synthesize.foreign import FOREIGN_VOICES
from tools.synthesize.voices import (
    MBROLA_PACKAGES,
    MBROLA_VOICES,
    mbrola_database,
    mbrola_voices,
    voices,
)
from tools.train.data import PhraseSet, SetSpec, generate_set


def test_mbrola_voices_are_neither_held_out_nor_evaluation_voices() -> None:
    names = {v.name for v in voices("all")}
    assert not names & set(MBROLA_VOICES)
    foreign = {fv.voice for fv in FOREIGN_VOICES} | {fv.label for fv in FOREIGN_VOICES}
    assert not foreign & {mbrola_database(v) for v in MBROLA_VOICES}
    assert "mbrola-us1" in MBROLA_PACKAGES and "mbrola-de2" in MBROLA_PACKAGES


def test_missing_databases_are_named_with_the_install_command(tmp_path: Path) -> None:
    (tmp_path / "us1").mkdir()
    (tmp_path / "us1" / "us1").write_bytes(b"db")
    with pytest.raises(FileNotFoundError) as err:
        mbrola_voices(tmp_path)
    message = str(err.value)
    assert "mbrola-us2" in message and "mbrola-us1 " not in message.partition("(")[0]
    assert "apt-get install" in message


@needs_mbrola
def test_mbrola_audio_is_read_at_the_voice_rate_not_the_formant_synthesizers(
    tmp_path: Path,
) -> None:
    # espeak_Initialize reports 22,050 Hz; an MBROLA voice produces 16 kHz. Read at the wrong
    # rate, the clip would come out 27% short and a fifth higher in pitch.
    # (Text that ends without a sentence pause: the command line adds one after a lone "A".)
    for voice in ("mb-us1", "en-us"):
        wav = tmp_path / f"{voice}.wav"
        subprocess.run(
            [shutil.which("espeak-ng") or "espeak-ng", "-v", voice, "-w", str(wav), "B. D."],
            check=True,
            capture_output=True,
        )
        reference, sr = sf.read(wav)
        syn = Espeak.get().synthesize("B. D.", voice, ssml=False)
        assert abs(syn.duration_s - len(reference) / sr) < 0.01, voice
        assert syn.words and 0.0 <= syn.words[0].start_s < syn.duration_s


@needs_mbrola
def test_a_set_with_mbrola_voices_is_spliced_with_exact_spans(tmp_path: Path) -> None:
    spec = SetSpec(12, (2, 4), "train", seed=3, chunk_size=12, mbrola_fraction=1.0)
    generate_set(tmp_path / "mb", spec, workers=1)
    data = PhraseSet(tmp_path / "mb")
    assert len(data) == 12
    normal = [m for m in data.meta if m["kind"] == "normal"]
    assert normal
    assert {m["voice"] for m in data.meta} <= set(MBROLA_VOICES)
    assert {m["render"] for m in data.meta} == {"spliced"}
    for i, m in enumerate(data.meta):
        phrase = data[i]
        assert len(m["spans"]) == len(m["spoken"])
        ends = [e for _, e in m["spans"]]
        assert all(s < e for s, e in m["spans"])
        assert all(a[1] <= b[0] for a, b in zip(m["spans"], m["spans"][1:], strict=False))
        if ends:
            assert ends[-1] <= len(phrase.x) / TARGET_SR + 1e-6
            # speech inside each span: spliced clips are trimmed to their audible region
            for s, e in m["spans"]:
                clip = phrase.x[round(s * TARGET_SR) : round(e * TARGET_SR)].astype(np.float64)
                assert np.sqrt(np.mean(clip**2)) > 30


@needs_mbrola
def test_mbrola_share_is_drawn_per_phrase(tmp_path: Path) -> None:
    spec = SetSpec(40, (1, 3), "train", seed=4, chunk_size=40, mbrola_fraction=0.5)
    generate_set(tmp_path / "half", spec, workers=1)
    voices_used = [m["voice"] for m in PhraseSet(tmp_path / "half").meta]
    share = sum(v in MBROLA_VOICES for v in voices_used) / len(voices_used)
    assert 0.25 < share < 0.75
