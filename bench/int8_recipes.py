"""Which int8 recipe runs the exported graph fastest on this CPU, and what each costs in fidelity.

The default local engine runs ONNX Runtime's dynamic int8 quantization of the MatMul/Gemm weights
(`asr_assets.inference.onnx.quantize_int8`). On the base-sized model the convolutional feature
encoder then takes about half of the int8 graph's time (ORT profile, `--profile`), so the
question is whether any recipe also makes the convolutions cheap without changing the outputs.
Every variant is made from the same fp32 export and timed interleaved over `--rounds` on the same
batches (2 intra-op threads, like the engine on this machine):

- `fp32`: the export itself;
- `int8`: the shipped recipe (dynamic, per-tensor, signed weights, MatMul/Gemm only);
- `uint8`: the same with unsigned weights;
- `int8_per_channel`: per-output-channel weight scales;
- `int8_conv_integer`: Conv added to the dynamic recipe (ORT's ConvInteger);
- `int8_conv_as_matmul`: each strided encoder Conv rewritten as Slice/Concat/MatMul (equal to
  the Conv in fp32, checked), so the dynamic recipe reaches it as an int8 GEMM;
- `int8_static_conv`: Conv statically quantized (QLinearConv, per-channel, calibrated on
  `--calibration` clips) with the dynamic MatMul recipe on top;
- `fp32_conv2d` / `int8_conv2d`: every 1-D Conv run as a 2-D Conv of height 1 (Unsqueeze, Conv,
  Squeeze; the same arithmetic), which ORT's blocked NCHWc kernels handle and 1-D Convs do not
  (the export now does this itself, so on a current export these equal `fp32` and `int8`);
- `int8_fused`: ORT's transformer optimizer first (fused Attention, SkipLayerNormalization,
  BiasGelu), then the dynamic recipe with Attention quantized too (QAttention).

The last three keep fp32's arithmetic in the convolutions: they ask whether any exact rewrite
buys what int8 convolutions would.

Fidelity is measured against fp32 on the same batches: the largest log-probability difference and
the share of frames whose best token is unchanged. With random weights the outputs are nearly flat,
so argmax agreement is a harsh, relative measure: only the ordering between recipes means much.

    python -m bench.int8_recipes --model base --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asr_assets.inference.onnx import convs_as_2d, replace_nodes
from bench.cpu_numerics import interleaved_seconds, run_header
from bench.throughput import OUT, model_dir_for

INT64_ONE = np.array([1], dtype=np.int64)


def _clips(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(int(rng.uniform(1.5, 5.0) * 16_000))).astype(np.float32)
        for _ in range(count)
    ]


def _feeds(session: Any, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
    from asr_assets.inference.onnx import INPUT_LENGTHS, INPUT_VALUES, pad_batch

    values, lengths = pad_batch(batch, max(c.size for c in batch))
    return {INPUT_VALUES: values, INPUT_LENGTHS: lengths}


def convs_as_matmuls(model: Any, min_inner: int = 256) -> int:
    """Rewrite each plain strided 1-D Conv (group 1, no padding or dilation, > 1 input channel)
    as frames gathered by `k` strided Slices, concatenated, times the reshaped weight.

    Returns how many were rewritten. The waveform's first Conv (one input channel) stays: its
    GEMM is tiny and quantizing raw audio costs the most accuracy.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    added: list[Any] = []
    nodes: list[Any] = []
    rewritten = 0

    def const(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = (
            numpy_helper.to_array(weights[node.input[1]])
            if node.op_type == "Conv" and node.input[1] in weights
            else None
        )
        plain = (
            weight is not None
            and weight.ndim == 3
            and attrs.get("group", 1) == 1
            and not any(attrs.get("pads", [0, 0]))
            and all(d == 1 for d in attrs.get("dilations", [1]))
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        )
        if not plain or weight is None:
            nodes.append(node)
            continue
        out_channels, in_channels, k = weight.shape
        if in_channels == 1 or in_channels * k < min_inner:
            nodes.append(node)
            continue
        stride = int(attrs.get("strides", [1])[0])
        p = f"{node.name}/as_matmul"
        # T' = (T - k) // s + 1 output frames; piece j holds input frames j, j + s, ..., so
        # each Slice ends at j + s * (T' - 1) + 1 = j + s * ((T - k) // s) + 1.
        new = [
            helper.make_node("Transpose", [node.input[0]], [f"{p}/xt"], perm=[0, 2, 1]),
            helper.make_node("Shape", [f"{p}/xt"], [f"{p}/t"], start=1, end=2),
            helper.make_node(
                "Sub", [f"{p}/t", const(f"{p}/k", np.array([k], np.int64))], [f"{p}/tk"]
            ),
            helper.make_node(
                "Div", [f"{p}/tk", const(f"{p}/s", np.array([stride], np.int64))], [f"{p}/q"]
            ),
            helper.make_node("Mul", [f"{p}/q", f"{p}/s"], [f"{p}/sq"]),
            helper.make_node("Add", [f"{p}/sq", const(f"{p}/one", INT64_ONE)], [f"{p}/span"]),
        ]
        axes = const(f"{p}/axes", INT64_ONE)
        steps = const(f"{p}/steps", np.array([stride], np.int64))
        pieces = []
        for j in range(k):
            start = const(f"{p}/start{j}", np.array([j], np.int64))
            new.append(helper.make_node("Add", [f"{p}/span", start], [f"{p}/end{j}"]))
            new.append(
                helper.make_node(
                    "Slice", [f"{p}/xt", start, f"{p}/end{j}", axes, steps], [f"{p}/piece{j}"]
                )
            )
            pieces.append(f"{p}/piece{j}")
        new.append(helper.make_node("Concat", pieces, [f"{p}/frames"], axis=2))
        # Row j * C + c of the matrix is tap j of input channel c, matching the Concat order.
        matrix = np.ascontiguousarray(weight.transpose(2, 1, 0).reshape(k * in_channels, -1))
        assert matrix.shape[1] == out_channels
        new.append(
            helper.make_node(
                "MatMul", [f"{p}/frames", const(f"{p}/weight", matrix)], [f"{p}/product"]
            )
        )
        product = f"{p}/product"
        if len(node.input) > 2 and node.input[2]:
            new.append(helper.make_node("Add", [product, node.input[2]], [f"{p}/biased"]))
            product = f"{p}/biased"
        new.append(helper.make_node("Transpose", [product], [node.output[0]], perm=[0, 2, 1]))
        for index, made in enumerate(new):
            made.name = f"{p}/{made.op_type}_{index}"
        nodes.extend(new)
        rewritten += 1
    replace_nodes(graph, nodes, added)
    return rewritten


def fused_transformer(source: Path, target: Path, heads: int, hidden: int) -> None:
    """ORT's own transformer fusions (the BERT patterns match wav2vec2's encoder layers)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
    )
    optimized.save_model_to_file(str(target))


def build_variants(
    fp32: Path,
    int8: Path,
    scratch: Path,
    calibration: int,
    heads: int = 0,
    hidden: int = 0,
    only: set[str] | None = None,
) -> dict[str, Path]:
    """Each variant's file, made (once, in `scratch`) only when asked for: the static recipe
    alone spends minutes calibrating on the base-sized model."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    def dynamic(
        source: Path, target: Path, weight_type: QuantType = QuantType.QInt8, **kwargs: Any
    ) -> Path:
        if not target.is_file():
            quantize_dynamic(str(source), str(target), weight_type=weight_type, **kwargs)
        return target

    def rewritten(source: Path, target: Path, rewrite: Callable[[Any], int]) -> Path:
        if not target.is_file():
            graph = onnx.load(str(source))
            rewrite(graph)
            onnx.checker.check_model(graph)
            onnx.save(graph, str(target))
        return target

    def static() -> Path:
        target = scratch / "static-conv.onnx"
        if target.is_file():
            return target
        reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
        feeds = iter([_feeds(reference, [clip]) for clip in _clips(calibration, seed=1)])

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(feeds, None)

        convs_only = scratch / "static-conv-only.onnx"
        quantize_static(
            str(fp32),
            str(convs_only),
            Reader(),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["Conv"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        return dynamic(convs_only, target, op_types_to_quantize=matmuls)

    def fused() -> Path:
        source = scratch / "fused.fp32.onnx"
        if not source.is_file():
            fused_transformer(fp32, source, heads, hidden)
        # Fused ops come from ORT's contrib domain, which shape inference cannot type.
        return dynamic(
            source,
            scratch / "fused.int8.onnx",
            op_types_to_quantize=[*matmuls, "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )

    matmuls = ["MatMul", "Gemm"]
    as_matmul = scratch / "conv-as-matmul.fp32.onnx"
    builders: dict[str, Callable[[], Path]] = {
        "fp32": lambda: fp32,
        "int8": lambda: int8,
        "uint8": lambda: dynamic(
            fp32,
            scratch / "uint8.onnx",
            weight_type=QuantType.QUInt8,
            op_types_to_quantize=matmuls,
        ),
        "int8_per_channel": lambda: dynamic(
            fp32, scratch / "per-channel.onnx", per_channel=True, op_types_to_quantize=matmuls
        ),
        "int8_conv_integer": lambda: dynamic(
            fp32, scratch / "conv-integer.onnx", op_types_to_quantize=[*matmuls, "Conv"]
        ),
        "fp32_conv_as_matmul": lambda: rewritten(fp32, as_matmul, convs_as_matmuls),
        "int8_conv_as_matmul": lambda: dynamic(
            rewritten(fp32, as_matmul, convs_as_matmuls),
            scratch / "conv-as-matmul.int8.onnx",
            op_types_to_quantize=matmuls,
        ),
        "int8_static_conv": static,
        "fp32_conv2d": lambda: rewritten(fp32, scratch / "conv2d.fp32.onnx", convs_as_2d),
        "int8_conv2d": lambda: rewritten(int8, scratch / "conv2d.int8.onnx", convs_as_2d),
    }
    if heads and hidden:
        builders["int8_fused"] = fused
    # fp32 and int8 are the references every ratio needs.
    wanted = [name for name in builders if not only or name in only | {"fp32", "int8"}]
    return {name: builders[name]() for name in wanted}


def profile_ops(path: Path, batches: list[list[np.ndarray]], threads: int) -> dict[str, float]:
    """Share of kernel time per operator type (ORT's own profiler)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / "ort-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        session.run(None, _feeds(session, batch))
    trace = Path(session.end_profiling())
    shares: Counter[str] = Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            shares[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total = sum(shares.values()) or 1
    return {op: round(us / total, 4) for op, us in shares.most_common(8)}


def measure(
    model_name: str,
    count: int,
    rounds: int,
    batch: int,
    threads: int,
    calibration: int,
    only: set[str] | None = None,
) -> dict[str, Any]:
    import onnxruntime as ort

    from asr_assets.inference.onnx import ensure_onnx_model

    model_dir = model_dir_for(model_name)
    fp32 = ensure_onnx_model(model_dir)
    int8 = ensure_onnx_model(model_dir, int8=True)
    scratch = OUT / f"int8-recipes-{model_name}"
    scratch.mkdir(parents=True, exist_ok=True)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    variants = build_variants(
        fp32,
        int8,
        scratch,
        calibration,
        config.num_attention_heads,
        config.hidden_size,
        only,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {
        name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in variants.items()
    }
    clips = _clips(count)
    batches = [clips[i : i + batch] for i in range(0, len(clips), batch)]
    outputs: dict[str, list[np.ndarray]] = {}

    def run(session: Any, clips_in: list[np.ndarray]) -> np.ndarray:
        return session.run(None, _feeds(session, clips_in))[0]

    for name, session in sessions.items():  # warm-up, and the outputs compared below
        outputs[name] = [run(session, b) for b in batches]

    def runner(session: Any) -> Callable[[], object]:
        return lambda: [run(session, b) for b in batches]

    seconds = interleaved_seconds({name: runner(s) for name, s in sessions.items()}, rounds)
    reference = outputs["fp32"]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    figures: dict[str, Any] = {}
    for name in sessions:
        diffs = [float(np.abs(a - b).max()) for a, b in zip(reference, outputs[name], strict=True)]
        agree = np.concatenate(
            [
                (a.argmax(-1) == b.argmax(-1)).ravel()
                for a, b in zip(reference, outputs[name], strict=True)
            ]
        )
        figures[name] = {
            "seconds": [round(s, 3) for s in seconds[name]],
            "median_s": round(median[name], 3),
            "speed_vs_fp32": round(median["fp32"] / median[name], 3),
            "speed_vs_int8": round(median["int8"] / median[name], 3),
            "max_abs_logprob_diff_vs_fp32": round(max(diffs), 6),
            "argmax_agreement_vs_fp32": round(float(agree.mean()), 4),
        }
    return {
        **run_header(model_name, clips, batch, threads, rounds),
        "variants": figures,
        "int8_op_shares": profile_ops(int8, batches[:2], threads),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "base"), default="demo")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=16, help="clips for static ranges")
    parser.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    only = {v for v in args.variants.split(",") if v} or None
    figures = measure(
        args.model, args.clips, args.rounds, args.batch, args.threads, args.calibration, only
    )
    out = args.out or OUT / f"int8-recipes-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{args.model} model, {figures['audio_s']} audio-s, batch {args.batch}:")
    for name, row in figures["variants"].items():
        print(
            f"  {name:22s} {row['median_s']:7.2f} s  {row['speed_vs_int8']:5.2f}x int8  "
            f"max|dlogp| {row['max_abs_logprob_diff_vs_fp32']:.2e}  "
            f"argmax agree {row['argmax_agreement_vs_fp32']:.4f}"
        )
    shares = ", ".join(f"{op} {share:.0%}" for op, share in figures["int8_op_shares"].items())
    print(f"  int8 kernel time by operator: {shares}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
