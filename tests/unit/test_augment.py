"""Each augmentation family: output shape, determinism for a seed, and that its effect is there."""

import numpy as np
import pytest

from tools.train.augment import (
    FAMILIES,
    ORDER,
    SR,
    AugmentConfig,
    augment,
    available_families,
    lpc_resynthesize,
    room_impulse_response,
)

SPANS = [(0.2, 0.6), (0.9, 1.3)]


def voiced(f0: float = 150.0) -> np.ndarray:
    """Two 0.4 s harmonic bursts (speech-like spectra) in 1.5 s of silence."""
    t = np.arange(int(1.5 * SR)) / SR
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 30) if f0 * k < 7500)
    gate = np.zeros_like(t)
    for s, e in SPANS:
        gate[int(s * SR) : int(e * SR)] = 1.0
    return (0.3 * tone * gate / np.max(np.abs(tone))).astype(np.float32)


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def centroid(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float((spec * freqs).sum() / spec.sum())


@pytest.mark.parametrize("name", [f for f in ORDER if f in available_families()])
def test_family_is_deterministic_finite_and_changes_the_audio(name: str) -> None:
    audio = voiced()
    one, scale = FAMILIES[name](audio, np.random.default_rng(7))
    two, scale2 = FAMILIES[name](audio, np.random.default_rng(7))
    assert one.dtype == np.float32 and np.isfinite(one).all()
    np.testing.assert_array_equal(one, two)
    assert scale == scale2
    if name not in ("speed", "tempo"):
        assert len(one) == len(audio) and scale == 1.0
    assert abs(len(one) - len(audio) * scale) <= 0.01 * SR  # spans scale with the audio
    assert len(one) != len(audio) or not np.allclose(one, audio, atol=1e-3)


def test_every_family_needs_its_tool_installed() -> None:
    # sox and ffmpeg are system dependencies of this project (make system-deps)
    assert set(available_families()) == set(FAMILIES)


def test_vtlp_moves_the_spectrum() -> None:
    audio = voiced()
    shifts = []
    for seed in range(6):
        out, _ = FAMILIES["vtlp"](audio, np.random.default_rng(seed))
        shifts.append(centroid(out) / centroid(audio))
    assert max(shifts) > 1.03 and min(shifts) < 0.97


def test_pitch_keeps_duration_and_moves_the_fundamental() -> None:
    audio = voiced()
    out, scale = FAMILIES["pitch"](audio, np.random.default_rng(3))
    assert scale == 1.0 and len(out) == len(audio)
    low = band_energy(audio, 140, 160) / band_energy(audio, 0, 8000)
    assert abs(band_energy(out, 140, 160) / band_energy(out, 0, 8000) - low) > 0.01


def test_speed_and_tempo_rescale_time() -> None:
    audio = voiced()
    for name in ("speed", "tempo"):
        out, scale = FAMILIES[name](audio, np.random.default_rng(11))
        assert scale != 1.0
        assert len(out) == pytest.approx(len(audio) * scale, abs=0.01 * SR)


def test_phone_band_removes_high_frequencies() -> None:
    audio = voiced(f0=220.0)
    out, _ = FAMILIES["phone"](audio, np.random.default_rng(0))
    assert band_energy(out, 5500, 8000) < 0.01 * band_energy(audio, 5500, 8000)


def test_codec_round_trip_stays_time_aligned() -> None:
    audio = voiced()
    for seed in (0, 1):  # mp3 and opus branches
        out, _ = FAMILIES["codec"](audio, np.random.default_rng(seed))
        envelope = np.abs(out) > 0.02
        active = np.flatnonzero(envelope)
        assert abs(active[0] / SR - SPANS[0][0]) < 0.02  # the first onset stays put


def test_reverb_adds_a_tail_after_the_letter() -> None:
    audio = voiced()
    out, _ = FAMILIES["reverb"](audio, np.random.default_rng(5))
    gap = slice(int(0.62 * SR), int(0.7 * SR))
    assert np.abs(out[gap]).max() > 10 * np.abs(audio[gap]).max() + 1e-4
    rir = room_impulse_response(np.random.default_rng(5))
    assert rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0


def test_noise_families_fill_the_silence() -> None:
    audio = voiced()
    silence = slice(0, int(0.2 * SR))
    for name in ("babble", "nonstationary"):
        out, _ = FAMILIES[name](audio, np.random.default_rng(2))
        assert np.abs(out[silence]).max() > 1e-3


def test_level_changes_the_gain() -> None:
    audio = voiced()
    out, _ = FAMILIES["level"](audio, np.random.default_rng(4))
    assert abs(np.log10(np.abs(out).max() / np.abs(audio).max())) > 0.05


def harmonic_contrast_db(x: np.ndarray, f0: float = 150.0) -> float:
    """Energy at the harmonics over energy halfway between them, inside the first burst."""
    segment = x[int(0.25 * SR) : int(0.55 * SR)]
    spec = np.abs(np.fft.rfft(segment * np.hanning(len(segment)))) ** 2
    freqs = np.fft.rfftfreq(len(segment), 1 / SR)
    at = [spec[np.argmin(np.abs(freqs - k * f0))] for k in range(1, 20)]
    between = [spec[np.argmin(np.abs(freqs - (k + 0.5) * f0))] for k in range(1, 20)]
    return float(10 * np.log10(np.sum(at) / np.sum(between)))


def test_lpc_analysis_and_synthesis_invert_each_other() -> None:
    # Kept residual, unwidened envelope, no tilt: the resynthesis is the input itself, so what
    # the family changes is only what its draws change.
    audio = voiced()
    out = lpc_resynthesize(audio, order=16, gamma=1.0, beta=1.0, tilt_db=0.0)
    assert np.linalg.norm(out - audio) / np.linalg.norm(audio) < 1e-3


def test_lpc_flattens_the_source_and_widens_the_formants() -> None:
    audio = voiced()
    kept = harmonic_contrast_db(audio)
    flat = lpc_resynthesize(audio, order=16, gamma=1.0, beta=0.0, tilt_db=0.0)
    assert harmonic_contrast_db(flat) < kept - 40  # the glottal fine structure is gone
    assert np.isclose(np.sqrt(np.mean(flat**2)), np.sqrt(np.mean(audio**2)), rtol=1e-3)

    def peakiness(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x[int(0.25 * SR) : int(0.55 * SR)])) ** 2
        return float(spec.max() / spec.mean())

    widened = lpc_resynthesize(audio, order=16, gamma=0.85, beta=1.0, tilt_db=0.0)
    assert peakiness(widened) < 0.7 * peakiness(audio)


def test_lpc_passes_through_clips_shorter_than_one_frame_and_silence() -> None:
    short = voiced()[int(0.3 * SR) : int(0.3 * SR) + 300]
    out, _ = FAMILIES["lpc"](short, np.random.default_rng(0))
    np.testing.assert_array_equal(out, short)
    silent, _ = FAMILIES["lpc"](np.zeros(SR, dtype=np.float32), np.random.default_rng(0))
    assert np.isfinite(silent).all() and not silent.any()


def test_augment_applies_only_enabled_families_and_rescales_spans() -> None:
    audio = voiced()
    config = AugmentConfig(families=("speed",), probability={"speed": 1.0})
    out, spans, applied = augment(audio, SPANS, np.random.default_rng(9), config)
    assert applied == ["speed"]
    scale = len(out) / len(audio)
    assert spans[1][1] == pytest.approx(SPANS[1][1] * scale, rel=0.01)
    none = AugmentConfig(families=())
    same, spans0, applied0 = augment(audio, SPANS, np.random.default_rng(9), none)
    assert applied0 == [] and spans0 == SPANS
    np.testing.assert_array_equal(same, audio)
    with pytest.raises(ValueError):
        AugmentConfig(families=("nope",))
