"""Render a :class:`PhrasePlan` to 16 kHz audio with the exact time span of every spoken letter.

Two renderings, chosen per phrase:

``whole``
    The phrase is synthesized in one espeak-ng call (SSML: every letter upper case and followed by
    a ``<break>``, because without a clause break espeak-ng reads "A" as the article; optional
    ``<prosody rate>`` per letter). This is the natural, co-articulated audio a model must handle.
    Spans come from espeak-ng's own word and phoneme events (see ``spans.py``), trimmed to the
    audible region. Checked against pause-free vs 400 ms-pause renderings of the same letters:
    the trimmed letter durations agree to within 2.5 ms (one analysis hop) on 5 voices.
``spliced``
    Each letter is synthesized on its own, cut to its audible region, and the clips are joined
    with the planned pauses, so spans are known by construction. Spliced audio has no
    co-articulation across letters; it is kept for exactness checks and as extra variety.

Noise and level changes are applied after the spans are measured on the clean signal, so labels
never depend on the noise draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.synthesize.espeak import TARGET_SR, Espeak, Synthesis
from tools.synthesize.plan import NoiseKind, NoiseSpec, PhrasePlan
from tools.synthesize.spans import audible_span, reference_db, word_core_intervals

#: Peak level rendered audio is limited to, so level changes never clip.
MAX_PEAK = 0.98


class RenderError(RuntimeError):
    """espeak-ng did not produce one audible word per planned letter."""


@dataclass(frozen=True)
class Rendered:
    """Final audio and, per spoken letter (by ``spoken_index``), its (start_s, end_s)."""

    audio: np.ndarray
    spans: tuple[tuple[float, float], ...]
    #: Per spoken letter, the synthesizer segment (word event to next word event / end); spans
    #: lie inside these. Kept so tests can check spans against the synthesizer's segmentation.
    segments: tuple[tuple[float, float], ...] = ()

    @property
    def duration_s(self) -> float:
        return len(self.audio) / TARGET_SR


def letter_ssml(letter: str, rate_pct: int = 100) -> str:
    """SSML for one letter: upper case so espeak-ng says its name, not a word."""
    upper = letter.upper()
    if rate_pct == 100:
        return upper
    return f'<prosody rate="{rate_pct}%">{upper}</prosody>'


def phrase_ssml(
    letters: tuple[str, ...], pauses_ms: tuple[int, ...], rates: tuple[int, ...]
) -> str:
    parts = [
        f'{letter_ssml(c, r)}<break time="{p}ms"/>'
        for c, p, r in zip(letters, pauses_ms, rates, strict=True)
    ]
    return "<speak>" + "".join(parts) + "</speak>"


def _synth(plan: PhrasePlan, text: str) -> Synthesis:
    return Espeak.get().synthesize(
        text,
        plan.voice.espeak_name,
        rate=plan.rate,
        pitch=plan.pitch,
        pitch_range=plan.pitch_range,
    )


def _spans_from_synthesis(
    syn: Synthesis, n_expected: int, context: str
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    if len(syn.words) != n_expected:
        raise RenderError(f"{context}: espeak-ng reported {len(syn.words)} words, not {n_expected}")
    ref = reference_db(syn.audio, TARGET_SR)
    words = [(w.start_s, [(p.name, p.start_s) for p in w.phonemes]) for w in syn.words]
    cores = word_core_intervals(words, syn.duration_s)
    bounds = [w.start_s for w in syn.words] + [syn.duration_s]
    segments = [(bounds[i], bounds[i + 1]) for i in range(len(syn.words))]
    spans: list[tuple[float, float]] = []
    for i, (lo, hi) in enumerate(cores):
        span = audible_span(syn.audio, TARGET_SR, lo, hi, ref)
        if span is None:
            raise RenderError(f"{context}: letter {i} is inaudible")
        spans.append(span)
    return spans, segments


def _render_whole(plan: PhrasePlan) -> tuple[np.ndarray, list[tuple[float, float]], list]:
    text = phrase_ssml(plan.spoken, plan.pauses_ms, plan.letter_rate_pct)
    syn = _synth(plan, text)
    spans, segments = _spans_from_synthesis(syn, len(plan.spoken), f"{plan.voice.name} {text}")
    return syn.audio, spans, segments


def _render_spliced(plan: PhrasePlan) -> tuple[np.ndarray, list[tuple[float, float]], list]:
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    pos = 0
    for letter, pause, rate in zip(plan.spoken, plan.pauses_ms, plan.letter_rate_pct, strict=True):
        text = f'<speak>{letter_ssml(letter, rate)}<break time="0ms"/></speak>'
        syn = _synth(plan, text)
        (span,), _ = _spans_from_synthesis(syn, 1, f"{plan.voice.name} {text}")
        s, e = round(span[0] * TARGET_SR), round(span[1] * TARGET_SR)
        clip = syn.audio[s:e]
        pieces.append(clip)
        spans.append((pos / TARGET_SR, (pos + len(clip)) / TARGET_SR))
        pos += len(clip)
        gap = np.zeros(round(pause * TARGET_SR / 1000), dtype=np.float32)
        pieces.append(gap)
        pos += len(gap)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    segments = [
        (spans[i][0], spans[i + 1][0] if i + 1 < len(spans) else len(audio) / TARGET_SR)
        for i in range(len(spans))
    ]
    return audio, spans, segments


def make_noise(kind: NoiseKind, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples: white, pink (1/f power), brown (1/f^2) or mains hum."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if kind == "hum":
        t = np.arange(n) / TARGET_SR
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        x = sum(
            (0.6**k) * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 2 * np.pi))
            for k in range(5)
        )
        x = x + 0.05 * rng.standard_normal(n)
    else:
        white = rng.standard_normal(n)
        if kind == "white":
            x = white
        else:
            spec = np.fft.rfft(white)
            f = np.fft.rfftfreq(n, 1 / TARGET_SR)
            f[0] = f[1] if n > 1 else 1.0
            spec = spec / (np.sqrt(f) if kind == "pink" else f)
            x = np.fft.irfft(spec, n)
    x = np.asarray(x, dtype=np.float64)
    x -= x.mean()
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    return (x / rms).astype(np.float32)


def _apply_level(audio: np.ndarray, spec: NoiseSpec) -> np.ndarray:
    ramp = np.linspace(0.0, spec.ramp_db, num=len(audio), dtype=np.float64)
    return (audio * 10.0 ** ((spec.gain_db + ramp) / 20.0)).astype(np.float32)


def _limit_peak(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > MAX_PEAK:
        audio = audio * (MAX_PEAK / peak)
    return audio.astype(np.float32)


def render(plan: PhrasePlan) -> Rendered:
    """Render ``plan``; deterministic for a given plan."""
    rng = np.random.default_rng(plan.noise_seed)
    if plan.kind == "silent":
        return Rendered(np.zeros(round(plan.empty_duration_s * TARGET_SR), np.float32), ())
    if plan.kind == "noise_only":
        n = round(plan.empty_duration_s * TARGET_SR)
        level_db = -26.0 + plan.noise.gain_db
        noise = make_noise(plan.noise.kind or "pink", n, rng) * 10.0 ** (level_db / 20.0)
        return Rendered(_limit_peak(noise), ())

    if plan.render == "whole":
        speech, spans, segments = _render_whole(plan)
    else:
        speech, spans, segments = _render_spliced(plan)
    lead = round(plan.lead_s * TARGET_SR)
    tail = round(plan.tail_s * TARGET_SR)
    clean = np.concatenate(
        [np.zeros(lead, np.float32), speech.astype(np.float32), np.zeros(tail, np.float32)]
    )
    offset = lead / TARGET_SR
    spans = [(s + offset, e + offset) for s, e in spans]
    segments = [(s + offset, e + offset) for s, e in segments]

    return Rendered(apply_channel(clean, spans, plan), tuple(spans), tuple(segments))


def apply_channel(
    clean: np.ndarray, spans: list[tuple[float, float]], plan: PhrasePlan
) -> np.ndarray:
    """Level change and background noise at the plan's SNR (measured over the letters' spans).

    Shared by every synthesizer so the channel of a store does not depend on who read it.
    """
    rng = np.random.default_rng(plan.noise_seed)
    audio = _apply_level(clean, plan.noise)
    if plan.noise.kind is not None:
        active = np.zeros(len(audio), dtype=bool)
        for s, e in spans:
            active[round(s * TARGET_SR) : round(e * TARGET_SR)] = True
        speech_rms = float(np.sqrt(np.mean(audio[active] ** 2))) if active.any() else 0.0
        noise_rms = speech_rms * 10.0 ** (-plan.noise.snr_db / 20.0)
        audio = audio + make_noise(plan.noise.kind, len(audio), rng) * noise_rms
    return _limit_peak(audio)
