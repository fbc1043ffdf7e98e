"""Growing trained weights into a larger layout keeps the function (tools/train/grow.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tools.train.grow import grow_state, max_output_difference  # noqa: E402
from tools.train.model import build_model  # noqa: E402

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 96, "conv_channels": 32}
BIG = {
    "hidden_size": 128,
    "num_hidden_layers": 5,
    "intermediate_size": 200,
    "num_attention_heads": 4,
    "conv_channels": 64,
}


def _pair(**big: int) -> tuple[object, object]:
    torch.manual_seed(0)
    source = build_model("w2v2", "small", 0.0, **SMALL).eval()
    # Random weights are too regular (zero biases, unit norms): perturb every tensor so that a
    # mapping which drops or misplaces a unit shows up in the outputs.
    with torch.no_grad():
        for value in source.state_dict().values():
            if value.is_floating_point():
                value.add_(0.05 * torch.randn_like(value))
    target = build_model("w2v2", "small", 0.0, **{**BIG, **big}).eval()
    return source, target


def test_grown_model_computes_the_same_function_without_noise() -> None:
    source, target = _pair()
    before = max_output_difference(source, target)
    grow_state(source, target, noise=0.0)
    assert before > 1e-2  # a fresh larger model is a different function
    assert max_output_difference(source, target) < 1e-4
    assert sum(p.numel() for p in target.parameters()) > 3 * sum(
        p.numel() for p in source.parameters()
    )


def test_added_layers_start_as_the_identity() -> None:
    source, target = _pair()
    grow_state(source, target, noise=0.0)
    zeroed = [
        i
        for i, layer in enumerate(target.wav2vec2.encoder.layers)
        if float(layer.feed_forward.output_dense.weight.detach().abs().sum()) == 0.0
        and float(layer.attention.out_proj.weight.detach().abs().sum()) == 0.0
    ]
    assert len(zeroed) == 3  # five layers grown from two
    assert 0 not in zeroed and 4 not in zeroed  # the old layers are spread to both ends


def test_noise_breaks_the_symmetry_of_copies_and_moves_outputs_little() -> None:
    source, target = _pair()
    grow_state(source, target, noise=0.01, seed=3)
    projection = target.wav2vec2.feature_projection.projection.weight
    # Rows 0 and 1 copy the same old unit; the noise must make them differ.
    assert not torch.equal(projection[0], projection[1])
    difference = max_output_difference(source, target)
    assert 0.0 < difference < 0.5


def test_widths_that_cannot_be_copied_evenly_are_refused() -> None:
    source, target = _pair(hidden_size=96, num_attention_heads=3)
    with pytest.raises(ValueError, match="multiple"):
        grow_state(source, target)


def test_a_smaller_target_is_refused() -> None:
    source, _ = _pair()
    smaller = build_model(
        "w2v2",
        "small",
        0.0,
        hidden_size=64,
        num_hidden_layers=1,
        intermediate_size=96,
        conv_channels=32,
    )
    with pytest.raises(ValueError, match="cannot remove layers"):
        grow_state(source, smaller)
