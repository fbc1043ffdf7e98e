"""The workload's own test: its logic on real audio, without the platform."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from main import SCHEMA, process


def _wav(seconds: float) -> bytes:
    t = np.arange(int(16_000 * seconds)) / 16_000
    buffer = io.BytesIO()
    sf.write(buffer, 0.5 * np.sin(2 * np.pi * 220 * t), 16_000, format="WAV")
    return buffer.getvalue()


def test_one_row_per_input_with_reasons_for_bad_files() -> None:
    files = {"a.wav": _wav(0.5), "bad.wav": b"not audio"}

    def read(key: str) -> bytes:
        if key not in files:
            raise FileNotFoundError(key)
        return files[key]

    rows = list(process([{"key": "a.wav"}, {"key": "bad.wav"}, {"key": "gone.wav"}], read))
    assert [r["status"] for r in rows] == ["ok", "error", "error"]
    assert rows[0]["duration_s"] == 0.5 and rows[0]["peak"] > 0.4
    assert [r["reason_code"] for r in rows[1:]] == ["audio_undecodable", "audio_missing"]
    assert set(rows[0]) <= set(SCHEMA.names)
