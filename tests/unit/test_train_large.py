"""The bigger model option: 5-20 M parameters, same raw-waveform contract, exports to ONNX."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from tools.train.model import SIZES, build_model

#: A tiny twin of the large layout (same front end width and head count, fewer/narrower layers),
#: so export is exercised in seconds.
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64}


@pytest.mark.parametrize("size", ["medium", "large"])
def test_big_sizes_have_5_to_20_million_parameters_and_run(size: str) -> None:
    import torch

    model = build_model("w2v2", size).eval()
    n = sum(p.numel() for p in model.parameters())
    assert 5_000_000 <= n <= 20_000_000
    assert n * 4 < 50 * 1024 * 1024  # float32 weights within the committed-model budget
    with torch.no_grad():
        logits = model(torch.randn(1, 16_000) * 0.1).logits
    assert logits.shape == (1, 49, 28)  # 20 ms frames over 28 tokens
    assert model.config.conv_dim == (256, 256) and model.config.num_attention_heads == 4


def test_a_tiny_twin_of_the_large_layout_exports_to_onnx(tmp_path: Path) -> None:
    from tools.export.cli import main
    from tools.train.export import export

    model = build_model("w2v2", "large", **TINY)
    assert model.config.conv_dim == (SIZES["large"]["conv_channels"],) * 2
    raw = tmp_path / "raw"
    model.save_pretrained(str(raw))
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# tiny twin of the large layout\n")
    shipped = tmp_path / "model"
    with contextlib.redirect_stdout(io.StringIO()):
        export(raw, shipped, card)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--model-dir", str(shipped), "--out", str(tmp_path / "repo")])
    assert code == 0, out.getvalue()
    match = re.search(r"max abs difference ONNX Runtime vs torch: (\S+)", out.getvalue())
    assert match is not None and float(match.group(1)) < 1e-3
    assert list((tmp_path / "repo").glob("*/1/model.onnx"))
