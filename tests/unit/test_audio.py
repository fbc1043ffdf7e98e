import io

import numpy as np
import pytest
import soundfile as sf

from asr_assets.core.audio import (
    CLIP_MAGIC,
    TARGET_SAMPLE_RATE,
    AudioPolicy,
    clip_cache_key,
    decode_audio,
    decode_clip,
    encode_clip,
)
from asr_assets.core.errors import PhraseError, ReasonCode
from tests.support.data import tone, wav_bytes


def encoded(
    samples: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    return wav_bytes(samples, rate=rate, fmt=fmt, subtype=subtype)


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [
        ("WAV", "PCM_16", 16_000),
        ("WAV", "FLOAT", 48_000),
        ("FLAC", None, 44_100),
        ("OGG", "VORBIS", 22_050),
        ("MP3", None, 24_000),
    ],
)
def test_decodes_common_formats_to_16k_mono(fmt: str, subtype: str | None, rate: int) -> None:
    data = encoded(tone(1.0, rate=rate), rate=rate, fmt=fmt, subtype=subtype)
    decoded = decode_audio(data)
    assert decoded.samples.dtype == np.float32
    assert abs(decoded.duration_s - 1.0) < 0.08  # mp3 encoders pad a few ms
    assert decoded.source_sample_rate == rate


def test_downmixes_stereo() -> None:
    left = tone(1.0)
    stereo = np.stack([left, -left * 0.0 + left], axis=1)
    decoded = decode_audio(encoded(stereo))
    assert decoded.source_channels == 2
    assert decoded.samples.ndim == 1
    np.testing.assert_allclose(decoded.samples, left, atol=1e-3)


def test_cuts_a_segment_without_decoding_the_rest() -> None:
    rate = 16_000
    signal = np.concatenate([tone(1.0, freq=200), tone(1.0, freq=400)])
    decoded = decode_audio(encoded(signal), start_s=1.0, end_s=2.0)
    assert decoded.duration_s == pytest.approx(1.0, abs=1 / rate)
    np.testing.assert_allclose(decoded.samples, signal[rate:], atol=1e-3)


BAD_INPUTS = {
    "zero_bytes": (b"", ReasonCode.AUDIO_EMPTY),
    "not_audio": (b"hello world, definitely not audio" * 20, ReasonCode.AUDIO_UNDECODABLE),
    "truncated_header": (encoded(tone(1.0))[:30], ReasonCode.AUDIO_UNDECODABLE),
    "too_short": (encoded(tone(0.1)), ReasonCode.AUDIO_TOO_SHORT),
    "too_long": (encoded(tone(61.0, rate=8000), rate=8000), ReasonCode.AUDIO_TOO_LONG),
    "silent": (encoded(np.zeros(16_000, dtype=np.float32)), ReasonCode.AUDIO_SILENT),
    "clipped": (
        encoded(np.sign(tone(1.0, level=1.0)).astype(np.float32)),
        ReasonCode.AUDIO_CLIPPED,
    ),
    "nan_samples": (
        encoded(
            np.where(np.arange(16_000) % 100 == 0, np.nan, 0.1).astype(np.float32), subtype="FLOAT"
        ),
        ReasonCode.AUDIO_NON_FINITE,
    ),
    "header_only": (encoded(np.zeros(0, dtype=np.float32)), ReasonCode.AUDIO_EMPTY),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_audio_gets_a_reason_code(name: str) -> None:
    data, reason = BAD_INPUTS[name]
    with pytest.raises(PhraseError) as raised:
        decode_audio(data)
    assert raised.value.reason is reason


def test_huge_declared_length_never_allocates_the_declared_size() -> None:
    data = bytearray(encoded(tone(1.0)))
    # RIFF data chunk size at byte 40: claim ~4 GB of samples that are not there.
    data[40:44] = (0xFFFFFFF0).to_bytes(4, "little")
    try:
        decoded = decode_audio(bytes(data), policy=AudioPolicy(max_source_seconds=600))
    except PhraseError as exc:
        assert exc.reason in {ReasonCode.AUDIO_TOO_LONG, ReasonCode.AUDIO_UNDECODABLE}
    else:  # libsndfile clamps the chunk to the file: only the real second is decoded
        assert decoded.duration_s == pytest.approx(1.0, abs=0.01)


def test_long_declared_flac_is_refused_before_reading() -> None:
    data = encoded(tone(2.0), fmt="FLAC")
    with pytest.raises(PhraseError) as raised:
        decode_audio(data, policy=AudioPolicy(max_source_seconds=1.0))
    assert raised.value.reason is ReasonCode.AUDIO_TOO_LONG


@pytest.mark.parametrize(
    ("start", "end"), [(5.0, 6.0), (0.5, 0.4), (-1.0, 0.5), (0.0, 120.0), (float("nan"), 1.0)]
)
def test_bad_segments(start: float, end: float) -> None:
    with pytest.raises(PhraseError) as raised:
        decode_audio(encoded(tone(2.0)), start_s=start, end_s=end)
    assert raised.value.reason in {ReasonCode.AUDIO_BAD_SEGMENT, ReasonCode.AUDIO_TOO_LONG}


def test_clip_round_trip_is_16_bit_exact() -> None:
    samples = tone(0.5)
    data = encode_clip(samples)
    restored = decode_clip(data)
    assert restored.shape == samples.shape
    np.testing.assert_allclose(restored, samples, atol=1 / 32767)
    assert data.startswith(CLIP_MAGIC) and len(data) == 16 + 2 * samples.size


def test_flac_clips_of_earlier_versions_decode_to_the_same_floats() -> None:
    samples = tone(0.5) + 0.01 * np.random.default_rng(3).standard_normal(8000).astype(np.float32)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    legacy = io.BytesIO()
    sf.write(legacy, pcm, TARGET_SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    np.testing.assert_array_equal(decode_clip(legacy.getvalue()), decode_clip(encode_clip(samples)))


@pytest.mark.parametrize("cut", [8, 12, 17, -1])
def test_truncated_clip_is_an_error_not_short_audio(cut: int) -> None:
    data = encode_clip(tone(0.25))
    with pytest.raises(ValueError, match="truncated"):
        decode_clip(data[:cut] if cut > 0 else data[:-1])


def test_cache_key_depends_on_bytes_and_cut() -> None:
    data = encoded(tone(1.0))
    assert clip_cache_key(data, None, None) == clip_cache_key(data, None, None)
    assert clip_cache_key(data, None, None) != clip_cache_key(data, 0.0, 0.5)
    assert clip_cache_key(data, None, None) != clip_cache_key(data + b"\0", None, None)


def test_a_segment_ending_beyond_the_recording_is_a_bad_segment() -> None:
    data = wav_bytes(tone(2.87))
    with pytest.raises(PhraseError) as caught:
        decode_audio(data, start_s=0.0, end_s=30.0)
    assert caught.value.reason is ReasonCode.AUDIO_BAD_SEGMENT
    # Rounding of catalog times within 50 ms of the end is tolerated.
    assert decode_audio(data, start_s=0.0, end_s=2.9).duration_s == pytest.approx(2.87, abs=0.01)


def test_a_constant_dc_offset_is_silence() -> None:
    data = wav_bytes(np.full(32_000, 0.5, dtype=np.float32))
    with pytest.raises(PhraseError) as caught:
        decode_audio(data)
    assert caught.value.reason is ReasonCode.AUDIO_SILENT


def test_speech_riding_on_a_dc_offset_is_kept_and_centred() -> None:
    decoded = decode_audio(wav_bytes(tone(1.0) + np.float32(0.3)))
    assert abs(float(np.mean(decoded.samples))) < 1e-3


def test_a_long_file_is_refused_from_its_header_before_decoding(monkeypatch) -> None:
    data = wav_bytes(tone(70.0, rate=8000, level=0.2), rate=8000)

    def no_reading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", no_reading)
    with pytest.raises(PhraseError) as caught:
        decode_audio(data)
    assert caught.value.reason is ReasonCode.AUDIO_TOO_LONG


VAD = AudioPolicy(min_speech_probability=0.5)


def test_noise_without_speech_is_rejected_by_voice_activity() -> None:
    noise = (0.1 * np.random.default_rng(0).standard_normal(32_000)).astype(np.float32)
    with pytest.raises(PhraseError) as caught:
        decode_audio(wav_bytes(noise), policy=VAD)
    assert caught.value.reason is ReasonCode.AUDIO_NO_SPEECH
    # The check is a policy knob, off by default: the same noise is then a loud, valid clip.
    assert decode_audio(wav_bytes(noise))


def test_speech_passes_voice_activity() -> None:
    from pathlib import Path

    sample = next(Path("data/sample-store/audio").rglob("0.wav"))
    assert decode_audio(sample.read_bytes(), policy=VAD).duration_s > 0.25
