"""Voice activity: does a clip hold speech at all?

The silence check measures energy, so a loud hum, a tone generator or static passes it and would
be scored as a child who read nothing. Silero VAD (its ONNX model ships inside the `silero-vad`
wheel) answers the question that matters: the highest speech probability over the clip's 32 ms
windows. The package is located, not imported: its `__init__` imports torch (and older releases
torchaudio), while ONNX Runtime is all the model needs.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per window at 16 kHz (32 ms), what the model was trained on
CONTEXT = 64  # samples of the previous window the model sees in front of each window

_session: Any = None
_session_lock = threading.Lock()


class VadUnavailableError(RuntimeError):
    """The silero-vad model is not installed: a deployment error, not a phrase error."""


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailableError("the silero-vad package (its bundled ONNX model) is missing")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise VadUnavailableError(f"silero-vad ships no model at {path}")
    return path


def _model() -> Any:
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            _session = ort.InferenceSession(
                str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return _session


def speech_probability(samples: np.ndarray) -> float:
    """The highest speech probability of any 32 ms window of a 16 kHz mono clip (0..1)."""
    session = _model()
    audio = np.asarray(samples, dtype=np.float32)
    if audio.size < WINDOW:
        audio = np.pad(audio, (0, WINDOW - audio.size))
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, CONTEXT), dtype=np.float32)
    rate = np.array(SAMPLE_RATE, dtype=np.int64)
    best = 0.0
    for start in range(0, audio.size - WINDOW + 1, WINDOW):
        window = audio[start : start + WINDOW][None, :]
        probability, state = session.run(
            None, {"input": np.concatenate([context, window], axis=1), "state": state, "sr": rate}
        )
        context = window[:, -CONTEXT:]
        best = max(best, float(probability[0][0]))
    return best
