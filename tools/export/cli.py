"""`python -m tools.export --model-dir DIR --out REPO_DIR`: export, check, publish a version.

Steps, each of which must pass before the next:
1. verify the model directory's checksums and export it to ONNX (dynamic batch and time axes);
2. run ONNX Runtime and torch on the same clips (different lengths, batched, so padding is
   exercised) and print the largest absolute log-probability difference; above `--tolerance`
   nothing is published;
3. copy the graph into `<REPO_DIR>/<model>/<version>/model.onnx` and (re)write `config.pbtxt`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tools.export.repository import TritonModelSettings, write_model_repository


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="model directory (SHA256SUMS)"
    )
    parser.add_argument("--out", type=Path, required=True, help="Triton model repository root")
    parser.add_argument("--model-name", help="Triton model name (default: the model's own name)")
    parser.add_argument("--version", type=int, help="version number (default: next free)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--preferred-batch-sizes", type=_int_list, default=[8, 16, 32])
    parser.add_argument("--max-queue-delay-us", type=int, default=5_000)
    parser.add_argument("--queue-timeout-s", type=float, default=30.0)
    parser.add_argument("--max-queue-size", type=int, default=256)
    parser.add_argument("--instances", type=int, default=1, help="model instances per GPU")
    parser.add_argument("--gpus", type=_int_list, default=[], help="GPU ids (default: all)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest acceptable |ONNX Runtime - torch| over log-probabilities",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from asr_assets.inference.local import LocalTorchEngine
    from asr_assets.inference.model_dir import model_info, verify_checksums
    from asr_assets.inference.onnx import (
        LocalOnnxEngine,
        export_onnx,
        max_abs_difference,
        parity_clips,
    )

    args = parse_args(argv)
    model_dir: Path = args.model_dir.resolve()
    # Settings first: a config Triton would reject should fail before minutes of export.
    model = model_info(model_dir, verify_checksums(model_dir))
    settings = TritonModelSettings(
        model_name=args.model_name or model.name,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=tuple(args.preferred_batch_sizes),
        max_queue_delay_us=args.max_queue_delay_us,
        queue_timeout_s=args.queue_timeout_s,
        max_queue_size=args.max_queue_size,
        instance_count=args.instances,
        gpus=tuple(args.gpus),
    )
    if args.version is not None and (args.out / settings.model_name / str(args.version)).exists():
        print(f"FAILED: version {args.version} exists; versions are immutable", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="asr-export-") as scratch:
        spec = export_onnx(model_dir, Path(scratch) / "model.onnx", opset=args.opset)
        clips = parity_clips()
        torch_engine = LocalTorchEngine(model_dir)
        onnx_engine = LocalOnnxEngine(model_dir, onnx_path=spec.path)
        try:
            difference, mismatched = max_abs_difference(
                torch_engine.infer(clips), onnx_engine.infer(clips)
            )
        finally:
            torch_engine.close()
            onnx_engine.close()
        print(
            f"max abs difference ONNX Runtime vs torch: {difference:.3g} "
            f"({len(clips)} clips batched, {mismatched} frame-count mismatches)"
        )
        if mismatched or difference > args.tolerance:
            print(f"FAILED: above tolerance {args.tolerance:g}; nothing published", file=sys.stderr)
            return 1
        entry = write_model_repository(spec, args.out, settings, version=args.version)
    print(f"model {spec.model.name}@{spec.model.version} sha256 {spec.model.sha256}")
    print(f"wrote {entry.model_path} and {entry.config_path} (version {entry.version})")
    return 0
