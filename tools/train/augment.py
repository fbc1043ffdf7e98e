"""Augmentations that make espeak-ng's output sound less like espeak-ng.

The shipped model learned espeak-ng's timbre instead of letters: it scores 64% balanced accuracy on
festival voices against 96% on held-out espeak-ng voices. espeak-ng stays the only training
synthesizer (the cross-synthesizer stores must stay unseen), so the variety has to come from
transforming its output. Each *family* below is switchable on its own, so what it buys can be
measured by training with and without it.

Every family takes ``(audio, rng)`` at 16 kHz and returns ``(audio, time_scale)``: the letters'
true spans are multiplied by ``time_scale`` (1.0 unless the family changes durations), so labels
stay exact. All randomness comes from ``rng``: the same seed gives the same samples.

Families:

``vtlp``   vocal-tract-length perturbation: the spectrum of every STFT frame is warped along
           frequency by a factor in [0.85, 1.15] (formants move, timing does not).
``pitch``  pitch shift of -4..+6 semitones at constant duration (sox ``pitch``).
``speed``  resampling by 0.85..1.2: tempo and pitch change together (time_scale = 1 / factor).
``tempo``  time stretch by 0.8..1.25 at constant pitch (sox ``tempo``).
``eq``     1-3 random peaking filters of -12..+12 dB plus a low or high shelf: microphones,
           formant emphasis.
``reverb`` a synthesized room impulse response (exponentially decaying noise, RT60 0.15-0.8 s,
           direct path first) convolved in.
``phone``  band-limiting: 8 kHz telephone band (300-3400 Hz) or a random low-pass.
``codec``  a lossy round trip through ffmpeg: MP3 at 16-32 kbit/s or Opus at 8-16 kbit/s.
``babble`` 3-6 other voices (from ``sources``, else this clip shifted and reversed) at 5-20 dB SNR.
``nonstationary`` noise whose level follows a random envelope, plus clicks and bursts.
``level``  gain of -30..+6 dB with soft clipping, and a random level step within the clip.
``lpc``    the LPC vocoder's view of the voice: per 32 ms frame, an all-pole envelope (order
           10-20, bandwidths widened by gamma 0.85-1) is re-excited by the frame's own residual
           flattened toward a pulse/noise source (keeping its phase) with a random source tilt.
           festival's `kd` and FreeTTS are residual-excited LPC diphone voices: this keeps the
           formants espeak-ng drew and replaces the glottal source the model could key on.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.signal as sps
import soxr

SR = 16_000
Family = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, float]]


def _finite(audio: np.ndarray, n: int | None = None) -> np.ndarray:
    out = np.nan_to_num(np.asarray(audio, dtype=np.float32))
    if n is not None:
        out = out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))
    return out


def _peak_limit(audio: np.ndarray, peak: float = 0.98) -> np.ndarray:
    top = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return audio * (peak / top) if top > peak else audio


def vtlp(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    alpha = float(rng.uniform(0.85, 1.15))
    n = len(audio)
    _, _, spec = sps.stft(audio, fs=SR, nperseg=512, noverlap=384)
    bins = spec.shape[0]
    source = np.arange(bins) / alpha  # output bin k takes input frequency k / alpha
    lo = np.clip(np.floor(source).astype(int), 0, bins - 1)
    hi = np.clip(lo + 1, 0, bins - 1)
    frac = (source - np.floor(source))[:, None]
    warped = (1 - frac) * spec[lo] + frac * spec[hi]
    warped[source > bins - 1] = 0
    _, out = sps.istft(warped, fs=SR, nperseg=512, noverlap=384)
    return _finite(out, n), 1.0


def _sox(audio: np.ndarray, effect: Sequence[str]) -> np.ndarray:
    fmt = ["-t", "raw", "-r", str(SR), "-e", "floating-point", "-b", "32", "-c", "1"]
    done = subprocess.run(
        ["sox", "-V1", *fmt, "-", *fmt, "-", *effect],
        input=np.asarray(audio, dtype=np.float32).tobytes(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return np.frombuffer(done.stdout, dtype=np.float32).copy()


def pitch(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    cents = float(rng.uniform(-400, 600))
    return _finite(_sox(audio, ["pitch", f"{cents:.0f}"]), len(audio)), 1.0


def speed(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    factor = float(rng.uniform(0.85, 1.2))
    # Played `factor` times faster: resample as if recorded at SR * factor.
    out = soxr.resample(audio.astype(np.float32), round(SR * factor), SR, quality="HQ")
    return _finite(out), 1.0 / factor


def tempo(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    factor = float(rng.uniform(0.8, 1.25))
    out = _sox(audio, ["tempo", "-s", f"{factor:.4f}"])
    return _finite(out), len(out) / max(1, len(audio))


def _peaking(f0: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """RBJ audio-EQ-cookbook peaking biquad."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / SR
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return b / den[0], den / den[0]


def _shelf(f0: float, gain_db: float, high: bool) -> tuple[np.ndarray, np.ndarray]:
    """RBJ shelving biquad (slope 1)."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / SR
    alpha = np.sin(w) / 2 * np.sqrt(2)
    cos, root = np.cos(w), 2 * np.sqrt(a) * alpha
    sign = 1 if high else -1
    plus = (a + 1) + sign * (a - 1) * cos
    minus = (a + 1) - sign * (a - 1) * cos
    b = a * np.array([plus + root, -sign * 2 * ((a - 1) + sign * (a + 1) * cos), plus - root])
    den = np.array([minus + root, sign * 2 * ((a - 1) - sign * (a + 1) * cos), minus - root])
    return b / den[0], den / den[0]


def eq(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    out = audio.astype(np.float64)
    for _ in range(int(rng.integers(1, 4))):
        f0 = float(np.exp(rng.uniform(np.log(150), np.log(6000))))
        b, a = _peaking(f0, float(rng.uniform(-12, 12)), float(rng.uniform(0.5, 4)))
        out = sps.lfilter(b, a, out)
    high = bool(rng.random() < 0.5)
    f0 = float(rng.uniform(2500, 5000) if high else rng.uniform(100, 400))
    b, a = _shelf(f0, float(rng.uniform(-10, 10)), high)
    out = sps.lfilter(b, a, out)
    return _finite(_peak_limit(out)), 1.0


def room_impulse_response(rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise with a direct path at t=0: a cheap, seedable room."""
    rt60 = float(rng.uniform(0.15, 0.8))
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    predelay = int(rng.uniform(0.002, 0.02) * SR)
    tail[:predelay] = 0
    ratio = float(rng.uniform(0.2, 1.0))  # reverberant energy relative to direct
    tail *= ratio / (np.sqrt(np.sum(tail**2)) or 1.0)
    tail[0] = 1.0
    return tail


def reverb(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    wet = sps.fftconvolve(audio.astype(np.float64), room_impulse_response(rng))[: len(audio)]
    rms_in = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) or 1.0
    rms_out = float(np.sqrt(np.mean(wet**2))) or 1.0
    return _finite(_peak_limit(wet * rms_in / rms_out)), 1.0


def phone(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    if rng.random() < 0.6:
        narrow = soxr.resample(audio.astype(np.float32), SR, 8000, quality="HQ")
        sos = sps.butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")
        narrow = sps.sosfilt(sos, narrow)
        out = soxr.resample(narrow.astype(np.float32), 8000, SR, quality="HQ")
    else:
        cutoff = float(rng.uniform(2500, 5500))
        sos = sps.butter(6, cutoff, btype="lowpass", fs=SR, output="sos")
        out = sps.sosfilt(sos, audio.astype(np.float64))
    return _finite(out, len(audio)), 1.0


def _align_to(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 1600) -> np.ndarray:
    """Undo a codec's delay: shift `decoded` by the lag of best cross-correlation (<= 100 ms)."""
    n = len(reference)
    decoded = _finite(decoded, n + max_lag)
    corr = sps.correlate(decoded[: n + max_lag], reference, mode="valid")
    lag = int(np.argmax(corr)) if len(corr) else 0
    return _finite(decoded[lag:], n)


def codec(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    if rng.random() < 0.5:
        args = ["-c:a", "libmp3lame", "-b:a", f"{int(rng.choice([16, 24, 32]))}k", "-f", "mp3"]
    else:
        args = ["-c:a", "libopus", "-b:a", f"{int(rng.choice([8, 12, 16]))}k", "-f", "ogg"]
    pcm = ["-f", "f32le", "-ar", str(SR), "-ac", "1"]
    encoded = subprocess.run(
        ["ffmpeg", "-v", "error", *pcm, "-i", "pipe:0", *args, "pipe:1"],
        input=np.asarray(audio, dtype=np.float32).tobytes(),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", *pcm, "pipe:1"],
        input=encoded,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return _align_to(audio, np.frombuffer(decoded, dtype=np.float32)), 1.0


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))) or 1e-9


def babble(
    audio: np.ndarray, rng: np.random.Generator, sources: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, float]:
    n = len(audio)
    mix = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):
        if sources:
            src = np.asarray(sources[int(rng.integers(len(sources)))], dtype=np.float64)
        else:
            src = audio[::-1].astype(np.float64)  # reversed speech: speech-like, unintelligible
        if len(src) == 0:
            continue
        src = np.tile(src, n // len(src) + 2)
        start = int(rng.integers(0, len(src) - n + 1))
        piece = src[start : start + n]
        mix += piece / _rms(piece)
    snr_db = float(rng.uniform(5, 20))
    mix *= _rms(audio) * 10 ** (-snr_db / 20) / _rms(mix)
    return _finite(_peak_limit(audio + mix)), 1.0


def nonstationary(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    n = len(audio)
    noise = rng.standard_normal(n)
    if rng.random() < 0.5:  # coloured
        noise = sps.lfilter([1.0], [1.0, -float(rng.uniform(0.5, 0.98))], noise)
    knots = max(2, int(n / SR * rng.uniform(1, 6)) + 2)
    envelope = np.interp(np.arange(n), np.linspace(0, n, knots), rng.uniform(0.0, 1.0, knots))
    noise = noise * envelope**2
    for _ in range(int(rng.integers(0, 4))):  # clicks and short bursts (doors, desks)
        at = int(rng.integers(0, max(1, n - 800)))
        length = int(rng.integers(20, 800))
        noise[at : at + length] += rng.standard_normal(min(length, n - at)) * rng.uniform(2, 8)
    snr_db = float(rng.uniform(5, 25))
    noise *= _rms(audio) * 10 ** (-snr_db / 20) / _rms(noise)
    return _finite(_peak_limit(audio + noise)), 1.0


def level(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    n = len(audio)
    gain = np.full(n, float(rng.uniform(-30, 6)))
    if rng.random() < 0.5 and n > 2:
        step_at = int(rng.integers(1, n))
        gain[step_at:] += float(rng.uniform(-10, 10))
    out = audio.astype(np.float64) * 10 ** (gain / 20)
    out = np.tanh(out * 1.2) / np.tanh(1.2)  # soft clipping where the gain overdrives
    return _finite(out), 1.0


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials [1, a1..ap] per row of autocorrelations `r` (frames x lags), vectorized."""
    frames = r.shape[0]
    a = np.zeros((frames, order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.einsum("fj,fj->f", a[:, 1:i], r[:, i - 1 : 0 : -1])
        k = -acc / np.maximum(err, 1e-12)
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        err = err * (1.0 - k**2)
    return a


def lpc_resynthesize(
    audio: np.ndarray, *, order: int, gamma: float, beta: float, tilt_db: float
) -> np.ndarray:
    """Re-excite each frame's all-pole envelope (bandwidths widened by `gamma` < 1) with the
    frame's residual, its magnitude flattened by `beta` (1: kept, 0: flat) and tilted by
    `tilt_db` per octave above 500 Hz. Order 16, gamma 1, beta 1, tilt 0 gives the input back
    (up to the STFT's edges)."""
    n = len(audio)
    nfft, hop = 512, 128
    if n < nfft:  # shorter than one analysis frame: no envelope to fit
        return _finite(audio)
    _, _, spec = sps.stft(audio, fs=SR, nperseg=nfft, noverlap=nfft - hop)
    power = np.abs(spec.T) ** 2  # frames x bins
    r = np.fft.irfft(power, n=nfft, axis=1)[:, : order + 1]
    r[:, 0] = r[:, 0] * 1.0001 + 1e-10  # white-noise correction keeps Levinson stable
    r *= np.exp(-0.5 * (2 * np.pi * 60.0 / SR * np.arange(order + 1)) ** 2)  # 60 Hz lag window
    a = _levinson(r, order)
    widened = a * gamma ** np.arange(order + 1)
    envelope = 1.0 / np.maximum(np.abs(np.fft.rfft(a, n=nfft, axis=1)), 1e-6)
    new_envelope = 1.0 / np.maximum(np.abs(np.fft.rfft(widened, n=nfft, axis=1)), 1e-6)
    residual = spec.T / envelope
    magnitude = np.abs(residual)
    level = np.sqrt(np.mean(magnitude**2, axis=1, keepdims=True)) + 1e-12
    flattened = level * (magnitude / level) ** beta
    freqs = np.fft.rfftfreq(nfft, 1 / SR)
    tilt = 10 ** (tilt_db / 20 * np.log2(np.maximum(freqs, 500.0) / 500.0))
    phase = residual / np.maximum(magnitude, 1e-12)
    _, out = sps.istft(
        (phase * flattened * tilt * new_envelope).T, fs=SR, nperseg=nfft, noverlap=nfft - hop
    )
    out = _finite(out, n)
    return out * np.float32(_rms(audio) / _rms(out))


def lpc(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    out = lpc_resynthesize(
        audio,
        order=int(rng.integers(10, 21)),
        gamma=float(rng.uniform(0.85, 1.0)),
        beta=float(rng.uniform(0.0, 0.7)),
        tilt_db=float(rng.uniform(-6, 6)),
    )
    return _finite(_peak_limit(out)), 1.0


FAMILIES: dict[str, Family] = {
    "vtlp": vtlp,
    "pitch": pitch,
    "speed": speed,
    "tempo": tempo,
    "eq": eq,
    "reverb": reverb,
    "phone": phone,
    "codec": codec,
    "babble": babble,
    "nonstationary": nonstationary,
    "level": level,
    "lpc": lpc,
}
#: Families that need an external program (sox or ffmpeg).
NEEDS = {"pitch": "sox", "tempo": "sox", "codec": "ffmpeg"}
#: Order of application: the source first (voice, rate), then the room, the channel, the noise.
ORDER = (
    "vtlp",
    "pitch",
    "speed",
    "tempo",
    "lpc",
    "eq",
    "reverb",
    "babble",
    "nonstationary",
    "phone",
    "codec",
    "level",
)


@dataclass(frozen=True)
class AugmentConfig:
    """Which families run, and how often each is applied to a phrase."""

    families: tuple[str, ...] = ORDER
    probability: dict[str, float] = field(
        default_factory=lambda: {
            "vtlp": 0.5,
            "pitch": 0.3,
            "speed": 0.3,
            "tempo": 0.3,
            "lpc": 0.5,
            "eq": 0.5,
            "reverb": 0.3,
            "babble": 0.15,
            "nonstationary": 0.2,
            "phone": 0.2,
            "codec": 0.2,
            "level": 0.3,
        }
    )

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown augmentation families: {sorted(unknown)}")


def available_families() -> tuple[str, ...]:
    return tuple(f for f in ORDER if NEEDS.get(f) is None or shutil.which(NEEDS[f]))


def augment(
    audio: np.ndarray,
    spans: Sequence[tuple[float, float]],
    rng: np.random.Generator,
    config: AugmentConfig,
    sources: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, list[tuple[float, float]], list[str]]:
    """Apply each enabled family with its probability; returns audio, rescaled spans and the
    families applied (recorded per phrase so their contribution can be measured)."""
    out = np.asarray(audio, dtype=np.float32)
    scale = 1.0
    applied: list[str] = []
    for name in ORDER:
        if name not in config.families or rng.random() >= config.probability.get(name, 0.0):
            continue
        if name == "babble":
            out, factor = babble(out, rng, sources)
        else:
            out, factor = FAMILIES[name](out, rng)
        scale *= factor
        applied.append(name)
    new_spans = [(s * scale, e * scale) for s, e in spans]
    return _finite(out), new_spans, applied
