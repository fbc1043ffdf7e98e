"""Generated activity days: catalog Parquet plus audio files, in the catalog data contract."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from asr_assets.core.tables import CATALOG_SCHEMA


def tone(seconds: float, rate: int = 16_000, freq: float = 220.0, level: float = 0.3) -> np.ndarray:
    """A voiced-looking signal: a harmonic tone with an envelope and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(seconds * 1000 + freq))
    signal = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 5))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * np.minimum(t / max(seconds, 1e-3), 1.0))
    out = level * signal * envelope / 2.0 + 0.01 * rng.standard_normal(t.size)
    return out.astype(np.float32)


def wav_bytes(
    samples: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@dataclass
class PhraseSpec:
    activity_id: str
    phrase_index: int
    expected_text: str
    audio: bytes | None  # None: reuse audio_key written by another phrase
    audio_key: str
    tenant_id: str = "tenant-a"
    student_id: str = "student-secret-1"
    audio_start_s: float | None = None
    audio_end_s: float | None = None


def write_day(root: Path, day: date, phrases: list[PhraseSpec]) -> None:
    rows = []
    for spec in phrases:
        if spec.audio is not None:
            path = root / spec.audio_key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(spec.audio)
        rows.append(
            {
                "activity_id": spec.activity_id,
                "tenant_id": spec.tenant_id,
                "student_id": spec.student_id,
                "activity_date": day,
                "phrase_index": spec.phrase_index,
                "expected_text": spec.expected_text,
                "audio_key": spec.audio_key,
                "audio_start_s": spec.audio_start_s,
                "audio_end_s": spec.audio_end_s,
                "created_at": datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC),
            }
        )
    directory = root / "catalog" / "activities" / f"activity_date={day.isoformat()}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), directory / "part-0.parquet")


def standard_day(root: Path, day: date) -> list[PhraseSpec]:
    """Good phrases, a cut-out segment, and a handful of bad inputs with known reason codes."""
    long_recording = np.concatenate(
        [tone(1.2, freq=200), tone(0.3, level=0.0), tone(1.5, freq=260)]
    )
    phrases = [
        PhraseSpec("act-1", 0, "b d p", wav_bytes(tone(1.5)), "audio/act-1/0.wav"),
        PhraseSpec(
            "act-1",
            1,
            "m n",
            wav_bytes(tone(1.0, rate=44_100, freq=300), rate=44_100),
            "audio/act-1/1.wav",
        ),
        PhraseSpec(
            "act-1", 2, "c k s e", wav_bytes(tone(2.0, freq=180), fmt="FLAC"), "audio/act-1/2.flac"
        ),
        PhraseSpec(
            "act-2",
            0,
            "a b",
            wav_bytes(long_recording),
            "audio/act-2/full.wav",
            tenant_id="tenant-b",
            audio_start_s=0.0,
            audio_end_s=1.2,
        ),
        PhraseSpec(
            "act-2",
            1,
            "g j",
            None,
            "audio/act-2/full.wav",
            tenant_id="tenant-b",
            audio_start_s=1.5,
            audio_end_s=3.0,
        ),
        PhraseSpec("act-3", 0, "q q", b"", "audio/act-3/0.wav"),
        PhraseSpec("act-3", 1, "x y", b"this is not audio at all" * 10, "audio/act-3/1.wav"),
        PhraseSpec(
            "act-3", 2, "z", wav_bytes(np.zeros(16_000, dtype=np.float32)), "audio/act-3/2.wav"
        ),
        PhraseSpec("act-3", 3, "a", None, "audio/act-3/missing.wav"),
        PhraseSpec("act-3", 4, "B D", wav_bytes(tone(1.0)), "audio/act-3/4.wav"),
    ]
    write_day(root, day, phrases)
    return phrases


STANDARD_DAY_ERRORS = {
    ("act-3", 0): "audio_empty",
    ("act-3", 1): "audio_undecodable",
    ("act-3", 2): "audio_silent",
    ("act-3", 3): "audio_missing",
    ("act-3", 4): "invalid_expected_text",
}
