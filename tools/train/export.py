"""Export a trained model to the shipped model directory (the model contract of DESIGN.md).

The directory gets ``config.json``, ``model.safetensors``, ``vocab.json`` (exactly
``{"<pad>": 0, "|": 1, "a": 2, ..., "z": 27}``), ``preprocessor_config.json``, the CTC tokenizer
config, ``MODEL_CARD.md``, and ``SHA256SUMS`` in ``sha256sum`` format covering every file except
itself and the model card (the card is prose and may be edited without invalidating the model).
The export reloads what it wrote with the Auto classes before declaring success.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from asr_assets.inference.model_dir import (
    CALIBRATION_FILE,
    read_calibration,
    write_checksums,
)
from asr_assets.inference.model_dir import MODEL_CARD as CARD
from tools.train.model import build_feature_extractor, save_tokenizer
from tools.train.vocab import BLANK, SEPARATOR, VOCAB

#: The issue-17 budget for committed weights (the larger sizes of `model.SIZES` fit).
MAX_BYTES = 50 * 1024 * 1024


def apply_blank_bias(model: Any, delta: float) -> None:
    """Lower the output bias of blank and separator by ``delta`` (a decoding prior baked in).

    Why: on letters whose identity rests on a 20-40 ms onset (b/d/p/e..., m/n) the model splits
    the posterior among the candidates and blank wins the frame-wise argmax, so greedy decoding
    deletes the letter. Shifting the blank prior is the usual CTC fix; baking it into the
    ``lm_head`` bias keeps the model a plain ``Wav2Vec2ForCTC`` that any greedy decoder uses as
    is. ``delta`` is tuned on training-voice phrases (``calibrate``), never on held-out voices.
    """
    import torch

    with torch.no_grad():
        model.lm_head.bias[BLANK] -= delta
        model.lm_head.bias[SEPARATOR] -= delta


def load_unbiased(model_dir: Path, blank_bias: float = 0.0) -> Any:
    """An exported model with its baked-in blank bias taken out again.

    Why: export lowers the blank and separator biases by the calibrated amount; training from
    an export, or averaging it with a fine-tune, must start from the model's own prior.
    """
    from transformers import AutoModelForCTC

    model = AutoModelForCTC.from_pretrained(str(model_dir))
    if blank_bias:
        apply_blank_bias(model, -blank_bias)
    return model


def interpolate(
    base_dir: Path, tuned_dir: Path, alpha: float, out: Path, base_blank_bias: float = 0.0
) -> None:
    """Write ``(1 - alpha) * base + alpha * tuned`` as a save_pretrained directory.

    Why: a fine-tune on augmented and new-timbre data moves the model toward voices it never
    heard before, and away from the ones it was good at. Averaging the fine-tuned weights with
    the ones it started from (WiSE-FT, Wortsman et al., 2022) keeps much of both: both sets of
    weights lie in one low-loss basin, since one was trained from the other. ``base_blank_bias``
    is the blank bias baked into an exported ``base`` (taken out first, as ``fit
    --init-from`` does), so the two are averaged on the same footing; the export puts the
    calibrated bias back.
    """
    import torch
    from transformers import AutoModelForCTC

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    base = load_unbiased(base_dir, base_blank_bias)
    tuned = AutoModelForCTC.from_pretrained(str(tuned_dir))
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    if base_state.keys() != tuned_state.keys() or any(
        base_state[k].shape != tuned_state[k].shape for k in base_state
    ):
        raise ValueError(f"{base_dir} and {tuned_dir} are not the same architecture and size")
    with torch.no_grad():
        mixed = {
            k: (1.0 - alpha) * v + alpha * tuned_state[k] if v.is_floating_point() else v
            for k, v in base_state.items()
        }
    tuned.load_state_dict(mixed)
    out.mkdir(parents=True, exist_ok=True)
    tuned.save_pretrained(str(out), safe_serialization=True)


def export(
    model_dir: Path,
    out: Path,
    card: Path,
    blank_bias: float = 0.0,
    calibration: Path | None = None,
) -> None:
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    model = AutoModelForCTC.from_pretrained(str(model_dir))
    if blank_bias:
        apply_blank_bias(model, blank_bias)
    if model.config.vocab_size != len(VOCAB) or model.config.pad_token_id != BLANK:
        raise ValueError("model vocabulary does not match tools.train.vocab.VOCAB")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    arch = "w2v2bert" if model.config.model_type == "wav2vec2-bert" else "w2v2"
    build_feature_extractor(arch).save_pretrained(str(out))
    save_tokenizer(out)
    shutil.copyfile(card, out / CARD)
    if calibration is not None:
        # Fitted on the exported weights (blank bias included); read back before shipping.
        shutil.copyfile(calibration, out / CALIBRATION_FILE)
        read_calibration(out)
    for p in out.iterdir():
        p.chmod(0o644)
    write_checksums(out)

    # verify: loads with the Auto classes, vocabulary is exact, size is small, scores a second
    reloaded = AutoModelForCTC.from_pretrained(str(out)).eval()
    fe = AutoFeatureExtractor.from_pretrained(str(out))
    feats = fe(torch.randn(16_000).numpy() * 0.1, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        logits = reloaded(**feats).logits
    assert logits.shape[-1] == len(VOCAB)
    assert json.loads((out / "vocab.json").read_text()) == VOCAB
    total = sum(p.stat().st_size for p in out.iterdir())
    if total > MAX_BYTES:
        raise ValueError(f"model directory is {total / 1e6:.1f} MB, over the 50 MB budget")
    print(f"exported {out} ({total / 1e6:.2f} MB): {sorted(p.name for p in out.iterdir())}")
