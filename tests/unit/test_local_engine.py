from pathlib import Path

import numpy as np
import pytest

from asr_assets.inference.local import LocalTorchEngine
from asr_assets.inference.model_dir import ModelIntegrityError
from tests.support.data import tone


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> LocalTorchEngine:
    return LocalTorchEngine(tiny_model_dir, num_threads=1)


def test_emissions_are_log_probabilities_per_20ms_frame(engine: LocalTorchEngine) -> None:
    (out,) = engine.infer([tone(1.0)])
    assert out.frame_duration_s == pytest.approx(0.02)
    assert out.num_frames == 49  # wav2vec2 conv stack: floor((16000 - 400) / 320) + 1
    assert out.log_probs.shape[1] == 28
    np.testing.assert_allclose(np.exp(out.log_probs).sum(axis=1), 1.0, atol=1e-4)


def test_padding_does_not_change_a_clip_s_emissions(engine: LocalTorchEngine) -> None:
    short, long = tone(0.6, freq=250), tone(2.0, freq=180)
    (alone,) = engine.infer([short])
    batched = engine.infer([short, long])
    assert batched[0].num_frames == alone.num_frames
    assert batched[1].num_frames == 99
    np.testing.assert_allclose(batched[0].log_probs, alone.log_probs, atol=2e-3)


def test_model_identity_comes_from_the_verified_directory(engine: LocalTorchEngine) -> None:
    assert engine.model.name == "tiny-random" and len(engine.model.sha256) == 64


def test_refuses_a_model_without_checksums(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelIntegrityError):
        LocalTorchEngine(tmp_path)


def test_bf16_autocast_is_its_own_numerics(tiny_model_dir: Path) -> None:
    """bf16 emissions must never be served from (or into) the fp32 emissions cache, and must
    keep the fp32 decisions on ordinary input."""
    from asr_assets.resources.inference import LocalInferenceResource

    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(16_000 + 800 * i)).astype(np.float32) for i in range(3)]
    with LocalInferenceResource(model_dir=str(tiny_model_dir)).open_engine() as fp32:
        reference = fp32.infer(clips)
        assert getattr(fp32, "numerics", "fp32") == "fp32"
    resource = LocalInferenceResource(model_dir=str(tiny_model_dir), torch_bf16=True)
    with resource.open_engine() as bf16:
        assert bf16.name == "local-torch-bf16" and bf16.numerics == "bf16"
        outputs = bf16.infer(clips)
    for ours, theirs in zip(outputs, reference, strict=True):
        assert ours.log_probs.dtype == np.float32 and ours.log_probs.shape == theirs.log_probs.shape
        assert np.abs(ours.log_probs - theirs.log_probs).max() < 0.5
    with pytest.raises(ValueError, match="backend 'torch' only"):
        LocalInferenceResource(model_dir=str(tiny_model_dir), backend="onnx", torch_bf16=True)
