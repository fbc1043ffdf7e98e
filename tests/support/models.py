"""A tiny randomly initialised Wav2Vec2ForCTC, so tests never depend on shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

from asr_assets.core.models import LETTERS
from asr_assets.inference.model_dir import write_checksums

VOCAB = {"<pad>": 0, "|": 1, **{letter: index + 2 for index, letter in enumerate(LETTERS)}}


def build_tiny_model(target: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16, 16),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        pad_token_id=0,
        ctc_loss_reduction="mean",
    )
    config.asr_model_name = "tiny-random"
    config.asr_model_version = "test"
    model = Wav2Vec2ForCTC(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(str(target))
    (target / "vocab.json").write_text(json.dumps(VOCAB))
    write_checksums(target)
    (target / "MODEL_CARD.md").write_text("# tiny-random\nRandom weights for tests.\n")
    return target
