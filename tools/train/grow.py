"""Grow a trained model into a larger size that computes the same function (Net2Net).

Why: issue 17 asks for a 5-20 M parameter model, and training one from scratch takes far longer
than a working session on two CPU cores (the shipped 1 M model took 3.5 h and was still
improving). Growing the shipped weights into the larger layout keeps everything they learned,
so the larger model starts where the shipped one is and the session's compute goes into what
the extra width and depth can add, not into relearning letters.

How the function is kept (Chen, Goodfellow and Shlens, "Net2Net", 2016):

* every unit of a residual stream or of the filterbank is copied the same number of times, so a
  LayerNorm over the copies sees the same mean and variance and returns copies of its output;
* a linear layer reading copied units divides its weights by the number of copies, so its sums
  are unchanged;
* attention heads are copied whole (new head ``h`` is old head ``h mod H``), keeping the head
  dimension and so the softmax scale;
* feed-forward units may be copied unevenly (nothing normalises over them);
* added Transformer layers start as the identity: with pre-LN layers, zeroing the attention
  output and the feed-forward output projections leaves only the residual path.

Copies would receive identical gradients forever; a small relative noise on the copied weights
(and dropout) lets them diverge. `max_output_difference` measures how far that noise moves the
outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tools.train.model import build_model


def _copies(new: int, old: int, rng: np.random.Generator, *, even: bool) -> np.ndarray:
    """For each new unit, the old unit it copies; every old unit appears at least once."""
    if new < old:
        raise ValueError(f"cannot shrink {old} units to {new}")
    if even:
        if new % old:
            raise ValueError(f"{new} is not a multiple of {old}: normalised units copy evenly")
        # Interleaved (0, 0, 1, 1, ...): convolution groups of the copy cover the same old units.
        return np.arange(new) // (new // old)
    extra = rng.choice(old, size=new - old, replace=True) if new > old else np.zeros(0, int)
    return np.concatenate([np.arange(old), extra]).astype(int)


def _head_copies(new_dim: int, old_dim: int, head_dim: int) -> np.ndarray:
    """Attention projections: new head h copies old head h mod (old heads), dim by dim."""
    if new_dim % head_dim or old_dim % head_dim or new_dim % old_dim:
        raise ValueError(
            f"attention width {old_dim} -> {new_dim} does not keep heads of {head_dim}"
        )
    index = np.arange(new_dim)
    old_heads = old_dim // head_dim
    return (index // head_dim % old_heads) * head_dim + index % head_dim


def _linear(weight: Any, out_map: np.ndarray, in_map: np.ndarray) -> Any:
    """W'[i, j, ...] = W[out(i), in(j), ...] / copies(in(j)): each sum over copied inputs is kept
    (a linear layer, or a convolution's [out, in, kernel] weight)."""
    import torch

    counts = torch.from_numpy(np.bincount(in_map)[in_map]).to(weight.dtype)
    counts = counts.reshape(-1, *([1] * (weight.ndim - 2)))
    return weight[torch.from_numpy(out_map)][:, torch.from_numpy(in_map)] / counts


def grow_state(source: Any, target: Any, seed: int = 0, noise: float = 0.01) -> None:
    """Fill `target` (a freshly built larger Wav2Vec2ForCTC) from `source`, in place."""
    import torch

    rng = np.random.default_rng(seed)
    sc, tc = source.config, target.config
    if sc.model_type != "wav2vec2" or tc.model_type != "wav2vec2":
        raise ValueError("only Wav2Vec2ForCTC models with the filterbank front end grow")
    if tuple(sc.conv_kernel) != tuple(tc.conv_kernel) or tuple(sc.conv_stride) != tuple(
        tc.conv_stride
    ):
        raise ValueError("the front end's framing must stay the same")
    if sc.num_conv_pos_embedding_groups != tc.num_conv_pos_embedding_groups:
        raise ValueError("the positional convolution must keep its number of groups")
    head_dim = sc.hidden_size // sc.num_attention_heads
    if tc.hidden_size // tc.num_attention_heads != head_dim:
        raise ValueError("the attention head dimension must stay the same")
    if tc.num_hidden_layers < sc.num_hidden_layers:
        raise ValueError("cannot remove layers")

    stream = _copies(tc.hidden_size, sc.hidden_size, rng, even=True)
    channels = _copies(tc.conv_dim[0], sc.conv_dim[0], rng, even=True)
    heads = _head_copies(tc.hidden_size, sc.hidden_size, head_dim)
    ffn = _copies(tc.intermediate_size, sc.intermediate_size, rng, even=False)
    vocab = np.arange(sc.vocab_size)
    one = np.zeros(1, dtype=int)

    src = {k: v.detach().clone() for k, v in source.state_dict().items()}
    out = {k: v.detach().clone() for k, v in target.state_dict().items()}
    copied: set[str] = set()

    def put(name: str, value: Any) -> None:
        if out[name].shape != value.shape:
            raise ValueError(
                f"{name}: built {tuple(value.shape)}, expected {tuple(out[name].shape)}"
            )
        out[name] = value.to(out[name].dtype)
        copied.add(name)

    def vector(name: str, mapping: np.ndarray, source_name: str | None = None) -> None:
        put(name, src[source_name or name][torch.from_numpy(mapping)])

    def dense(prefix: str, out_map: np.ndarray, in_map: np.ndarray, source: str = "") -> None:
        source = source or prefix
        put(f"{prefix}.weight", _linear(src[f"{source}.weight"], out_map, in_map))
        vector(f"{prefix}.bias", out_map, f"{source}.bias")

    # Front end: the learned filterbank and its per-frame LayerNorms.
    fe = "wav2vec2.feature_extractor.conv_layers"
    for layer in range(len(sc.conv_dim)):
        in_map = one if layer == 0 else channels
        weight = _linear(src[f"{fe}.{layer}.conv.weight"], channels, in_map)
        put(f"{fe}.{layer}.conv.weight", weight)
        for part in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            vector(f"{fe}.{layer}.{part}", channels)
    fp = "wav2vec2.feature_projection"
    vector(f"{fp}.layer_norm.weight", channels)
    vector(f"{fp}.layer_norm.bias", channels)
    dense(f"{fp}.projection", stream, channels)
    vector("wav2vec2.masked_spec_embed", stream)

    # Positional convolution (grouped, weight-normalised over all but the kernel axis).
    pc = "wav2vec2.encoder.pos_conv_embed.conv"
    g, v = (
        src[f"{pc}.parametrizations.weight.original0"],
        src[f"{pc}.parametrizations.weight.original1"],
    )
    effective = g * v / v.norm(dim=(0, 1), keepdim=True)
    groups = tc.num_conv_pos_embedding_groups
    new_per_group, old_per_group = tc.hidden_size // groups, sc.hidden_size // groups
    factor = new_per_group // old_per_group
    local = torch.from_numpy(np.arange(new_per_group) // factor)
    grown = effective[torch.from_numpy(stream)][:, local] / factor
    put(f"{pc}.parametrizations.weight.original1", grown)
    put(f"{pc}.parametrizations.weight.original0", grown.norm(dim=(0, 1), keepdim=True))
    vector(f"{pc}.bias", stream)
    vector("wav2vec2.encoder.layer_norm.weight", stream)
    vector("wav2vec2.encoder.layer_norm.bias", stream)

    # Transformer layers: the old ones spread evenly, the added ones start as the identity.
    placed = np.linspace(0, tc.num_hidden_layers - 1, sc.num_hidden_layers).round().astype(int)
    for old_layer, new_layer in enumerate(placed.tolist()):
        s, t = f"wav2vec2.encoder.layers.{old_layer}", f"wav2vec2.encoder.layers.{new_layer}"
        for proj in ("q_proj", "k_proj", "v_proj"):
            dense(f"{t}.attention.{proj}", heads, stream, f"{s}.attention.{proj}")
        dense(f"{t}.attention.out_proj", stream, heads, f"{s}.attention.out_proj")
        dense(
            f"{t}.feed_forward.intermediate_dense",
            ffn,
            stream,
            f"{s}.feed_forward.intermediate_dense",
        )
        dense(f"{t}.feed_forward.output_dense", stream, ffn, f"{s}.feed_forward.output_dense")
        for norm in ("layer_norm", "final_layer_norm"):
            for part in ("weight", "bias"):
                vector(f"{t}.{norm}.{part}", stream, f"{s}.{norm}.{part}")
    for new_layer in sorted(set(range(tc.num_hidden_layers)) - set(placed.tolist())):
        t = f"wav2vec2.encoder.layers.{new_layer}"
        for proj in ("attention.out_proj", "feed_forward.output_dense"):
            for part in ("weight", "bias"):
                put(f"{t}.{proj}.{part}", torch.zeros_like(out[f"{t}.{proj}.{part}"]))
    dense("lm_head", vocab, stream)

    if noise > 0:
        generator = torch.Generator().manual_seed(seed)
        for name in copied:
            value = out[name]
            if value.ndim >= 2 and value.abs().sum() > 0:
                scale = noise * float(value.std())
                out[name] = value + scale * torch.randn(value.shape, generator=generator)
    target.load_state_dict(out, strict=True)


def grow(
    base_dir: Path,
    size: str,
    out: Path,
    *,
    base_blank_bias: float = 0.0,
    seed: int = 0,
    noise: float = 0.01,
    dropout: float = 0.05,
) -> tuple[Any, Any]:
    """Write `base_dir`'s weights grown to `size` as a save_pretrained directory (unbiased);
    returns the source (unbiased) and the grown model, for comparing the two."""
    from tools.train.export import load_unbiased

    source = load_unbiased(base_dir, base_blank_bias).eval()
    target = build_model("w2v2", size, dropout).eval()
    grow_state(source, target, seed=seed, noise=noise)
    out.mkdir(parents=True, exist_ok=True)
    target.save_pretrained(str(out), safe_serialization=True)
    return source, target


def max_output_difference(source: Any, target: Any, seconds: float = 2.0, seed: int = 0) -> float:
    """Largest logit difference between two models on the same random waveforms."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * 16_000)
    waves = 0.1 * torch.randn(2, samples, generator=generator)
    with torch.no_grad():
        a = source.eval()(input_values=waves).logits
        b = target.eval()(input_values=waves).logits
    return float((a - b).abs().max())
