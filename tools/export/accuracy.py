"""What int8 quantization (and ONNX itself) costs in letter accuracy, on a labelled store.

`python -m tools.export.accuracy --model-dir models/demo-letters --store DIR [--days D ...]`

Runs the same clips through local torch (the reference), ONNX Runtime fp32 and ONNX Runtime int8,
greedy-decodes each, and prints per engine:
- letter accuracy: the share of reference letters recognized as themselves (edit alignment of
  the recognized letters to the reference), and the letter error rate (substitutions, deletions
  and insertions per reference letter); the reference is what was truly spoken
  (`ground_truth/phrases.parquet` from `tools.synthesize`) or, without ground truth, the
  expected letters of the catalog;
- agreement: the share of phrases whose letters equal torch's exactly;
- the largest |Δ log-probability| against torch over all frames.

It decodes audio with the pipeline's own decoder and validation (phrases the pipeline would
reject are skipped and counted), so the figures describe what a run would see. For the full
pipeline measure (decisions, spans), run `tools.evaluate` with the inference resource switched to
`backend: onnx, quantize_int8: true`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from asr_assets.core.alignment import EditOp, edit_alignment
from asr_assets.core.audio import decode_audio
from asr_assets.core.batching import plan_batches
from asr_assets.core.decoding import greedy_decode
from asr_assets.core.errors import PhraseError
from asr_assets.core.storage import CATALOG_PREFIX
from asr_assets.inference.base import Emissions, InferenceEngine


@dataclass(frozen=True)
class EvaluationPhrase:
    activity_id: str
    phrase_index: int
    samples: np.ndarray
    reference: list[str]


@dataclass(frozen=True)
class EvaluationSet:
    phrases: list[EvaluationPhrase]
    reference_kind: str  # "spoken" (ground truth) or "expected" (catalog)
    skipped: int


@dataclass(frozen=True)
class EngineAccuracy:
    engine: str
    phrases: int
    letters: int
    matched: int
    letter_errors: int
    agreement: float
    max_abs_log_prob_diff: float

    @property
    def letter_accuracy(self) -> float:
        return self.matched / self.letters if self.letters else float("nan")

    @property
    def letter_error_rate(self) -> float:
        return self.letter_errors / self.letters if self.letters else float("nan")


def load_evaluation_set(
    store: Path, days: Sequence[str] | None = None, limit: int | None = None
) -> EvaluationSet:
    """Decoded clips with reference letters from a store in the catalog data contract."""
    catalog = store / CATALOG_PREFIX
    partitions = sorted(catalog.glob("activity_date=*"))
    if days:
        partitions = [p for p in partitions if p.name.split("=", 1)[1] in set(days)]
    spoken: dict[tuple[str, int], str] = {}
    truth = store / "ground_truth" / "phrases.parquet"
    if truth.is_file():
        for row in pq.read_table(
            truth, columns=["activity_id", "phrase_index", "spoken_text"]
        ).to_pylist():
            spoken[(row["activity_id"], int(row["phrase_index"]))] = row["spoken_text"] or ""
    phrases: list[EvaluationPhrase] = []
    skipped = 0
    for partition in partitions:
        for path in sorted(partition.glob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                if limit is not None and len(phrases) >= limit:
                    break
                key = (str(row["activity_id"]), int(row["phrase_index"]))
                text = spoken.get(key, row["expected_text"])
                audio_path = store / str(row["audio_key"])
                try:
                    decoded = decode_audio(
                        audio_path.read_bytes(),
                        start_s=row.get("audio_start_s"),
                        end_s=row.get("audio_end_s"),
                    )
                except (PhraseError, OSError):
                    skipped += 1
                    continue
                letters = [part for part in str(text or "").split(" ") if part]
                phrases.append(EvaluationPhrase(key[0], key[1], decoded.samples, letters))
    return EvaluationSet(phrases, "spoken" if spoken else "expected", skipped)


def run_engine(engine: InferenceEngine, clips: Sequence[np.ndarray]) -> list[Emissions]:
    """Emissions for every clip, in batches the engine accepts."""
    results: list[Emissions | None] = [None] * len(clips)
    for plan in plan_batches(
        [clip.size for clip in clips],
        max_batch_size=engine.max_batch_size,
        max_batch_samples=engine.max_batch_samples,
    ):
        outputs = engine.infer([clips[i] for i in plan.indices])
        for index, emissions in zip(plan.indices, outputs, strict=True):
            results[index] = emissions
    return [emissions for emissions in results if emissions is not None]


def compare_engines(
    engines: Mapping[str, InferenceEngine], evaluation: EvaluationSet, reference: str
) -> list[EngineAccuracy]:
    """Accuracy of each engine, and its agreement with and distance from `reference`."""
    clips = [phrase.samples for phrase in evaluation.phrases]
    emissions = {name: run_engine(engine, clips) for name, engine in engines.items()}
    vocabulary = engines[reference].vocabulary
    letters = {
        name: [greedy_decode(e.log_probs, vocabulary).letters for e in outputs]
        for name, outputs in emissions.items()
    }
    report = []
    for name in engines:
        errors = matched = 0
        for phrase, recognized in zip(evaluation.phrases, letters[name], strict=True):
            steps = edit_alignment(phrase.reference, recognized)
            matches = sum(step.op is EditOp.MATCH for step in steps)
            matched += matches
            errors += len(steps) - matches
        same = sum(a == b for a, b in zip(letters[name], letters[reference], strict=True))
        worst = 0.0
        for ref, cand in zip(emissions[reference], emissions[name], strict=True):
            frames = min(ref.num_frames, cand.num_frames)
            worst = max(
                worst, float(np.max(np.abs(ref.log_probs[:frames] - cand.log_probs[:frames])))
            )
        report.append(
            EngineAccuracy(
                engine=name,
                phrases=len(clips),
                letters=sum(len(p.reference) for p in evaluation.phrases),
                matched=matched,
                letter_errors=errors,
                agreement=same / len(clips) if clips else float("nan"),
                max_abs_log_prob_diff=worst,
            )
        )
    return report


def format_report(report: Sequence[EngineAccuracy], evaluation: EvaluationSet) -> str:
    baseline = report[0].letter_accuracy
    lines = [
        f"{len(evaluation.phrases)} phrases, {report[0].letters} letters (reference: "
        f"{evaluation.reference_kind} letters; {evaluation.skipped} phrases skipped as "
        "undecodable or invalid)",
        f"{'engine':<18} {'letter acc':>10} {'Δ acc':>8} {'LER':>8} {'agree':>7} "
        f"{'max|Δlogp|':>11}",
    ]
    for row in report:
        lines.append(
            f"{row.engine:<18} {row.letter_accuracy:>10.4f} "
            f"{row.letter_accuracy - baseline:>+8.4f} {row.letter_error_rate:>8.4f} "
            f"{row.agreement:>7.3f} {row.max_abs_log_prob_diff:>11.4g}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from asr_assets.inference.local import LocalTorchEngine
    from asr_assets.inference.onnx import LocalOnnxEngine

    parser = argparse.ArgumentParser(
        prog="python -m tools.export.accuracy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True, help="store root with a catalog")
    parser.add_argument("--days", nargs="*", help="activity dates (default: all)")
    parser.add_argument("--limit", type=int, help="at most this many phrases")
    parser.add_argument("--cache-dir", type=Path, help="where ONNX exports are kept")
    args = parser.parse_args(argv)
    evaluation = load_evaluation_set(args.store, args.days, args.limit)
    if not evaluation.phrases:
        print(f"no decodable phrases under {args.store}", file=sys.stderr)
        return 1
    engines: dict[str, InferenceEngine] = {
        "local-torch": LocalTorchEngine(args.model_dir),
        "local-onnx": LocalOnnxEngine(args.model_dir, cache_dir=args.cache_dir),
        "local-onnx-int8": LocalOnnxEngine(args.model_dir, cache_dir=args.cache_dir, int8=True),
    }
    try:
        report = compare_engines(engines, evaluation, reference="local-torch")
    finally:
        for engine in engines.values():
            engine.close()
    print(format_report(report, evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
