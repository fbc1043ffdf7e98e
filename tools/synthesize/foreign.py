"""Letters read by other synthesizers than espeak-ng: the cross-synthesizer evaluation stores.

The demo model is trained on espeak-ng only. To measure whether it learned *letters* rather than
espeak-ng's timbre, `make eval` also scores stores read by synthesizers it has never heard:

* festival with the ``kd`` diphone voice (Debian ``festvox-kdlpc16k``, ``voice_ked_diphone``) and
  the ``us-slt-hts`` statistical voice (``festvox-us-slt-hts``, ``voice_cmu_us_slt_arctic_hts``);
* FreeTTS (Debian ``freetts``) with its ``kevin16`` (16 kHz) and ``kevin`` (8 kHz) diphone voices;
* flite (Debian ``flite``) with its ``rms`` and ``awb`` clustergen voices: statistical parametric
  voices of two more speakers (US and Scottish English). flite's ``kal16`` and ``slt`` are left
  out: they are FreeTTS's ``kevin16`` speaker and festival's ``slt`` speaker again.

These synthesizers report no reliable word timings, so every letter is synthesized on its own,
trimmed to its audible region (the same 40 dB rule as ``spans.py``) and the clips are joined with
the planned pauses: each letter's span is exact by construction. Each voice is rendered at three
speaking rates (and FreeTTS and flite's ``awb`` also at three pitches); the plan's speaking rate
picks one.

Clips are cached on disk (``cache_dir``), keyed by synthesizer, voice, setting and letter, so a
store is re-rendered without re-running the synthesizers. These voices must never be used for
training: ``tools.train`` draws voices only from ``voices.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from tools.synthesize.espeak import TARGET_SR
from tools.synthesize.plan import LETTERS, PhrasePlan
from tools.synthesize.render import Rendered, RenderError, apply_channel
from tools.synthesize.spans import audible_span, reference_db
from tools.synthesize.voices import Voice

Synthesizer = Literal["festival", "freetts", "flite"]
SYNTHESIZERS: tuple[Synthesizer, ...] = ("festival", "freetts", "flite")
FREETTS_JAR = Path("/usr/share/java/freetts.jar")
DEFAULT_CACHE = Path(".tmp/foreign-clips")

#: What each synthesizer is given to say a letter's name. Festival reads a lone "A" as the
#: article (/ax/), so "a" is spelled "Ay" (checked: festival's Segment relation gives /ey/).
FESTIVAL_TEXT = {c: ("Ay" if c == "a" else c.upper()) for c in LETTERS}
FREETTS_TEXT = {c: c.upper() for c in LETTERS}
#: flite reads a lone "A" as the letter (checked: ``flite -ps -t A`` gives /ey/; every letter's
#: phones were checked the same way).
FLITE_TEXT = {c: c.upper() for c in LETTERS}


@dataclass(frozen=True)
class ForeignVoice:
    """One voice of a foreign synthesizer; ``voice`` is festival's voice function, or FreeTTS's or
    flite's voice name."""

    synthesizer: Synthesizer
    label: str
    voice: str

    @property
    def as_voice(self) -> Voice:
        """The plan/ground-truth identity: ``<synthesizer>+<label>`` in the ``voice`` column."""
        return Voice(self.synthesizer, self.label)


FOREIGN_VOICES: tuple[ForeignVoice, ...] = (
    ForeignVoice("festival", "kd", "voice_ked_diphone"),
    ForeignVoice("festival", "us-slt-hts", "voice_cmu_us_slt_arctic_hts"),
    ForeignVoice("freetts", "kevin16", "kevin16"),
    ForeignVoice("freetts", "kevin", "kevin"),
    ForeignVoice("flite", "rms", "rms"),
    ForeignVoice("flite", "awb", "awb"),
)

#: Three settings per voice, slow / normal / fast: festival's Duration_Stretch (the HTS voice
#: ignores it: one rate), FreeTTS's ``speakingRate`` property and pitch (Hz). FreeTTS's property
#: acts inversely (measured: 190 gives letters ~50% longer than 120), hence the order.
FESTIVAL_STRETCH = (1.25, 1.0, 0.85)
FREETTS_SETTINGS = ((190, 120), (150, 105), (120, 95))
#: flite's ``duration_stretch`` and ``int_f0_target_mean`` (Hz), slow / normal / fast. ``awb``
#: follows the pitch; ``rms``'s output is byte for byte the same at any pitch (checked), so its
#: settings differ in rate only.
FLITE_SETTINGS = ((1.25, 120), (1.0, 105), (0.85, 95))


def foreign_voices(synthesizer: Synthesizer | Literal["all"] = "all") -> tuple[ForeignVoice, ...]:
    return tuple(v for v in FOREIGN_VOICES if synthesizer in ("all", v.synthesizer))


def find_voice(voice: Voice) -> ForeignVoice:
    for fv in FOREIGN_VOICES:
        if fv.as_voice == voice:
            return fv
    raise KeyError(f"{voice.name} is not a foreign voice")


def available(synthesizer: Synthesizer) -> bool:
    if synthesizer == "festival":
        return shutil.which("festival") is not None
    if synthesizer == "flite":
        return shutil.which("flite") is not None
    return shutil.which("java") is not None and FREETTS_JAR.exists()


def setting_for(rate_wpm: int) -> int:
    """The plan's espeak-ng speaking rate (100-230 words/min) mapped to slow / normal / fast."""
    return 0 if rate_wpm < 145 else (1 if rate_wpm < 190 else 2)


def _festival_clips(voice: ForeignVoice, setting: int, out: Path, letters: str) -> None:
    stretch = FESTIVAL_STRETCH[setting]
    lines = [f"({voice.voice})", f"(Parameter.set 'Duration_Stretch {stretch})"]
    for c in letters:
        text = FESTIVAL_TEXT[c]
        lines.append(
            f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{out / c}.wav" \'riff)'
        )
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
        script = Path(fh.name)
    try:
        subprocess.run(
            ["festival", "-b", str(script)],
            check=True,
            capture_output=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    finally:
        script.unlink(missing_ok=True)


def _freetts_clips(voice: ForeignVoice, setting: int, out: Path, letters: str) -> None:
    rate, pitch = FREETTS_SETTINGS[setting]
    for c in letters:
        subprocess.run(
            [
                "java",
                f"-Dcom.sun.speech.freetts.voice.speakingRate={rate}",
                f"-Dcom.sun.speech.freetts.voice.pitch={pitch}",
                "-jar",
                str(FREETTS_JAR),
                "-voice",
                voice.voice,
                "-dumpAudio",
                str(out / f"{c}.wav"),
                "-text",
                FREETTS_TEXT[c],
            ],
            check=True,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


def _flite_clips(voice: ForeignVoice, setting: int, out: Path, letters: str) -> None:
    stretch, pitch = FLITE_SETTINGS[setting]
    for c in letters:
        subprocess.run(
            [
                "flite",
                "-voice",
                voice.voice,
                "--setf",
                f"duration_stretch={stretch}",
                "--setf",
                f"int_f0_target_mean={pitch}",
                "-t",
                FLITE_TEXT[c],
                "-o",
                str(out / f"{c}.wav"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )


_CLIP_WRITERS = {"festival": _festival_clips, "freetts": _freetts_clips, "flite": _flite_clips}


def trim_clip(audio: np.ndarray) -> np.ndarray:
    """The audible region of a single-letter clip (40 dB below its loudest frame)."""
    span = audible_span(
        audio, TARGET_SR, 0.0, len(audio) / TARGET_SR, reference_db(audio, TARGET_SR)
    )
    if span is None:
        raise RenderError("inaudible letter clip")
    return audio[round(span[0] * TARGET_SR) : round(span[1] * TARGET_SR)].astype(np.float32)


def _load_16k(path: Path) -> np.ndarray:
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if sr != TARGET_SR:
        mono = soxr.resample(mono, sr, TARGET_SR, quality="HQ").astype(np.float32)
    return mono


class ClipBank:
    """Trimmed single-letter clips per (voice, setting), synthesized once and cached on disk."""

    def __init__(self, cache_dir: Path = DEFAULT_CACHE, letters: str = LETTERS) -> None:
        self.cache_dir = cache_dir
        #: Letters to synthesize (tests ask for a few: FreeTTS starts a JVM per letter).
        self.letters = letters
        self._memory: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def clips(self, voice: ForeignVoice, setting: int) -> dict[str, np.ndarray]:
        key = (voice.as_voice.name, setting)
        if key not in self._memory:
            folder = self.cache_dir / voice.synthesizer / voice.label / f"s{setting}"
            missing = "".join(c for c in self.letters if not (folder / f"{c}.wav").exists())
            if missing:
                folder.mkdir(parents=True, exist_ok=True)
                _CLIP_WRITERS[voice.synthesizer](voice, setting, folder, missing)
            self._memory[key] = {c: trim_clip(_load_16k(folder / f"{c}.wav")) for c in self.letters}
        return self._memory[key]

    def render(self, plan: PhrasePlan) -> Rendered:
        """Join the plan's letters with its pauses; the channel (noise, level) as for espeak-ng."""
        if plan.kind != "normal":
            from tools.synthesize.render import render

            return render(plan)  # silence and noise involve no synthesizer
        clips = self.clips(find_voice(plan.voice), setting_for(plan.rate))
        return join_clips([clips[c] for c in plan.spoken], plan)


def join_clips(clips: Sequence[np.ndarray], plan: PhrasePlan) -> Rendered:
    """Lead silence, clip, pause, clip, ..., tail silence; spans are where the clips were put."""
    pieces = [np.zeros(round(plan.lead_s * TARGET_SR), np.float32)]
    pos = len(pieces[0])
    spans: list[tuple[float, float]] = []
    for clip, pause in zip(clips, plan.pauses_ms, strict=True):
        pieces.append(clip)
        spans.append((pos / TARGET_SR, (pos + len(clip)) / TARGET_SR))
        pos += len(clip)
        gap = np.zeros(round(pause * TARGET_SR / 1000), np.float32)
        pieces.append(gap)
        pos += len(gap)
    pieces.append(np.zeros(round(plan.tail_s * TARGET_SR), np.float32))
    clean = np.concatenate(pieces)
    return Rendered(apply_channel(clean, spans, plan), tuple(spans), tuple(spans))
