"""Loading the engine ahead of the run: taken once, by the same settings only, never leaked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import asr_assets.resources.inference as inference
from asr_assets.resources.inference import LocalInferenceResource, discard_prewarmed_engines


class FakeEngine:
    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.closed = False
        self.loaded_on = threading.current_thread().name

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeEngine]]:
    """Every engine loaded, in order; a model dir named `broken` fails to load."""
    made: list[FakeEngine] = []

    def fake_open(model_dir: str, **_: object) -> FakeEngine:
        if Path(model_dir).name == "broken":
            raise ValueError("model files do not match SHA256SUMS")
        engine = FakeEngine(model_dir)
        made.append(engine)
        return engine

    monkeypatch.setattr(inference, "open_local_engine", fake_open)
    yield made
    assert discard_prewarmed_engines() == 0, "a test left a prewarmed engine behind"


def test_open_engine_takes_the_prewarmed_engine_once(loads: list[FakeEngine]) -> None:
    resource = LocalInferenceResource(model_dir="/models/a", backend="onnx")
    resource.prewarm()
    resource.prewarm()  # already loading: no second load
    with resource.open_engine() as engine:
        assert engine is loads[0] and engine.loaded_on == "engine-prewarm"
    assert engine.closed
    with resource.open_engine() as again:  # taken once: the next stage loads its own
        assert again is not engine and again.loaded_on == threading.current_thread().name
    assert len(loads) == 2


def test_other_settings_do_not_take_it_and_discard_closes_it(loads: list[FakeEngine]) -> None:
    LocalInferenceResource(model_dir="/models/a", backend="onnx").prewarm()
    int8 = LocalInferenceResource(model_dir="/models/a", backend="onnx", quantize_int8=True)
    with int8.open_engine() as engine:
        assert engine.loaded_on == threading.current_thread().name
    assert discard_prewarmed_engines() == 1
    assert [e.closed for e in loads] == [True, True]


def test_a_failed_prewarm_fails_in_the_stage_with_the_real_error(loads: list[FakeEngine]) -> None:
    resource = LocalInferenceResource(model_dir="/models/broken", backend="onnx")
    resource.prewarm()
    with pytest.raises(ValueError, match="SHA256SUMS"), resource.open_engine():
        pass
    assert loads == []
