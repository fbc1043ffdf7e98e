"""Model, feature extractor and tokenizer definitions for the demo letter model.

Architecture: a raw-waveform ``Wav2Vec2ForCTC`` whose convolutional front end is a *learned
filterbank*: one 400-sample (25 ms) convolution every 160 samples (10 ms) into 128 channels,
then a 2-frame, stride-2 convolution, i.e. the framing of a log-mel front end, learned. Output
frames are 20 ms (stride 320), frame ``t`` sees samples [320 t, 320 t + 560).

Measured on this machine (fwd+bwd+AdamW step, batch 16 x 3.2 s, idle cores, 2 threads):

=========================================================  ========  ==========
model                                                      params    s/step
=========================================================  ========  ==========
Wav2Vec2, default-style 5-layer conv stack (32-128 ch)      1.06 M    0.43
Wav2Vec2, learned filterbank front end (this model)         1.00 M    0.26
Wav2Vec2-BERT (log-mel Conformer) 128 x 5                   1.63 M    0.33-0.45
=========================================================  ========  ==========

Why not Wav2Vec2-BERT, which also converged: its input is log-mel features, and the platform's
ONNX/Triton path (``asr_assets.inference.onnx``) takes raw waveforms and exports only
``input_values`` models. The filterbank front end gets the cheap framing of a spectrogram model
while staying a plain ``Wav2Vec2ForCTC`` that every engine of the platform can serve.
``feat_extract_norm="layer"`` (per-frame LayerNorm, not GroupNorm over time) so padded batches
give the same result as single phrases; ``do_stable_layer_norm`` (pre-LN) trains stably from
scratch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.train.vocab import BLANK, VOCAB

#: Transformer sizes; ``small`` is the shipped model.
#: ``medium`` (6.9 M parameters) and ``large`` (10.6 M) are the generalization candidates of
#: issue 17: a wider learned filterbank (256 channels) and 4 attention heads, still a plain
#: ``Wav2Vec2ForCTC`` with raw-waveform input, so ONNX/Triton export is unchanged; float32
#: weights stay under the 50 MB budget of the model directory.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 96, "num_hidden_layers": 4, "intermediate_size": 256},
    "small": {"hidden_size": 128, "num_hidden_layers": 5, "intermediate_size": 384},
    "base": {"hidden_size": 144, "num_hidden_layers": 6, "intermediate_size": 432},
    "medium": {
        "hidden_size": 256,
        "num_hidden_layers": 8,
        "intermediate_size": 1024,
        "num_attention_heads": 4,
        "conv_channels": 256,
    },
    "large": {
        "hidden_size": 288,
        "num_hidden_layers": 10,
        "intermediate_size": 1152,
        "num_attention_heads": 4,
        "conv_channels": 256,
    },
}
ARCHITECTURES = ("w2v2", "w2v2bert")


def _common(dropout: float) -> dict[str, Any]:
    return {
        "vocab_size": len(VOCAB),
        "pad_token_id": BLANK,
        "bos_token_id": None,
        "eos_token_id": None,
        "num_attention_heads": 2,
        "hidden_dropout": dropout,
        "activation_dropout": dropout,
        "attention_dropout": dropout,
        "feat_proj_dropout": dropout,
        "final_dropout": dropout,
        "layerdrop": 0.0,
        # SpecAugment sized for letters: 2-frame (40 ms) time masks; the default 10-frame mask
        # (200 ms) hides half of a short letter.
        "mask_time_prob": 0.05,
        "mask_time_length": 2,
        "mask_time_min_masks": 0,
        "mask_feature_prob": 0.05,
        "mask_feature_length": 8,
        "ctc_loss_reduction": "mean",
        "ctc_zero_infinity": True,
    }


def build_config(
    arch: str = "w2v2", size: str = "small", dropout: float = 0.05, **overrides: int
) -> Any:
    """`overrides` replace entries of the size (tests build tiny twins of a big layout)."""
    dims = {**SIZES[size], **overrides}
    channels = dims.pop("conv_channels", 128)
    common = {**_common(dropout), "num_attention_heads": dims.pop("num_attention_heads", 2)}
    if arch == "w2v2":
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(
            **common,
            **dims,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_dim=(channels, channels),
            conv_kernel=(400, 2),
            conv_stride=(160, 2),
            conv_bias=True,
            num_conv_pos_embeddings=32,
            num_conv_pos_embedding_groups=8,
        )
    if arch == "w2v2bert":
        from transformers import Wav2Vec2BertConfig

        return Wav2Vec2BertConfig(
            **common,
            **dims,
            feature_projection_input_dim=160,
            conv_depthwise_kernel_size=15,
            position_embeddings_type="relative_key",
            left_max_position_embeddings=64,
            right_max_position_embeddings=8,
            add_adapter=False,
        )
    raise ValueError(f"unknown architecture {arch!r}")


def build_model(
    arch: str = "w2v2", size: str = "small", dropout: float = 0.05, **overrides: int
) -> Any:
    from transformers import AutoModelForCTC

    return AutoModelForCTC.from_config(build_config(arch, size, dropout, **overrides))


def output_frames(config: Any) -> Callable[[int], int]:
    """Input length (samples, or feature frames) -> output frames, from the config."""
    if getattr(config, "model_type", "") == "wav2vec2-bert":
        return int
    kernels, strides = tuple(config.conv_kernel), tuple(config.conv_stride)

    def frames(n: int) -> int:
        for k, s in zip(kernels, strides, strict=True):
            n = max(0, (n - k) // s + 1)
        return n

    return frames


def build_feature_extractor(arch: str = "w2v2") -> Any:
    if arch == "w2v2bert":
        return build_log_mel_extractor()
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def build_log_mel_extractor() -> Any:
    from transformers import SeamlessM4TFeatureExtractor

    return SeamlessM4TFeatureExtractor(
        feature_size=80,
        num_mel_bins=80,
        sampling_rate=16_000,
        stride=2,
        padding_value=0.0,
        return_attention_mask=True,
    )


def save_tokenizer(directory: Path) -> None:
    """Write a CTC tokenizer (vocab.json + tokenizer config) with the vocabulary in id order.

    ``do_lower_case`` stays False: in ``Wav2Vec2CTCTokenizer`` it *upper*-cases the input, which
    would map every letter to the pad token. ``unk_token`` is the pad token so the tokenizer adds
    no 29th token.
    """
    from transformers import Wav2Vec2CTCTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab_path = directory / "vocab.json"
    vocab_path.write_text(json.dumps(VOCAB, indent=2) + "\n")
    tok = Wav2Vec2CTCTokenizer(  # tokens, not secrets: S106 misreads the *_token names
        str(vocab_path),
        unk_token="<pad>",  # noqa: S106
        pad_token="<pad>",  # noqa: S106
        word_delimiter_token="|",  # noqa: S106
        bos_token=None,
        eos_token=None,
        do_lower_case=False,
    )
    tok.save_pretrained(str(directory))
    # save_pretrained writes vocab.json sorted by token; the contract is the id order
    vocab_path.write_text(json.dumps(VOCAB, indent=2) + "\n")
