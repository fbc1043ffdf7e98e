"""`python -m tools.evaluate`: the accuracy benchmark (`make eval`).

Runs the real pipeline — `dg.materialize` of the same assets and resources the code location
uses — over every day of a labeled store written by `tools.synthesize`, then compares the
committed result partitions with the store's ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tools.evaluate.metrics import (
    confusion_table,
    decision_metrics,
    insertion_metrics,
    join_outcomes,
    recognition_accuracy,
    span_errors,
    top_confusions,
)

TARGETS = {
    "balanced_accuracy": 0.99,
    "misread_recall": 0.97,
    "share_within_60ms": 0.90,
}


def partitions_of(store: Path) -> list[str]:
    days = sorted((store / "catalog" / "activities").glob("activity_date=*"))
    return [day.name.split("=", 1)[1] for day in days]


def run_pipeline(
    store: Path,
    model_dir: Path,
    partitions: list[str],
    run_config: dict[str, object] | None = None,
) -> dict[str, list[dict]]:
    import dagster as dg

    from asr_assets.assets.published_scores import read_result_partition
    from asr_assets.definitions import ALL_ASSETS, build_definitions

    # The process environment still applies (ASR_LOCAL_BACKEND=onnx, ASR_ONNX_INT8=true, ...), so
    # one command measures any engine; the store and model are the evaluator's own arguments.
    environ = {**os.environ, "ASR_DATA_ROOT": str(store), "ASR_MODEL_DIR": str(model_dir)}
    definitions = build_definitions(environ)
    rows: dict[str, list[dict]] = {"letter_scores": [], "phrase_results": [], "errors": []}
    with dg.instance_for_test() as instance:
        for partition in partitions:
            result = dg.materialize(
                ALL_ASSETS,
                partition_key=partition,
                resources=definitions.resources,
                instance=instance,
                run_config=run_config,
            )
            if not result.success:
                raise RuntimeError(f"pipeline run for {partition} failed")
            _, tables = read_result_partition(definitions.resources["store"], partition)
            for name, values in tables.items():
                rows[name].extend(values)
    return rows


def evaluate(
    store: Path, model_dir: Path, accept_support: float | str | None = "default"
) -> dict[str, object]:
    """Score every day of `store`; `accept_support` overrides the alignments stage's setting."""
    partitions = partitions_of(store)
    # Measure the engine, never the emissions cache of an earlier run.
    ops: dict[str, object] = {"transcripts": {"config": {"reuse_emissions": False}}}
    if accept_support != "default":
        ops["alignments"] = {"config": {"accept_support": accept_support}}
    run_config = {"ops": ops}
    started = time.perf_counter()
    rows = run_pipeline(store, model_dir, partitions, run_config)
    elapsed = time.perf_counter() - started
    truth = pq.read_table(store / "ground_truth" / "letters.parquet").to_pylist()
    outcomes = join_outcomes(truth, rows["letter_scores"], rows["errors"])
    confusions = confusion_table(outcomes)
    phrases = len(rows["phrase_results"]) + len(rows["errors"])
    audio_s = sum(float(p["duration_s"]) for p in rows["phrase_results"])
    return {
        "store": str(store),
        "model_dir": str(model_dir),
        "model": rows["letter_scores"][0]["model_version"] if rows["letter_scores"] else None,
        "partitions": partitions,
        "phrases": phrases,
        "phrases_errored": len(rows["errors"]),
        "errors_by_reason": _count(r["reason_code"] for r in rows["errors"]),
        "expected_letters": len(outcomes),
        "letters_unscored": sum(o.predicted_status is None for o in outcomes),
        "letter_recognition_accuracy": recognition_accuracy(outcomes),
        **decision_metrics(outcomes),
        **insertion_metrics(truth, rows["letter_scores"]),
        **span_errors(outcomes),
        "top_confusions": top_confusions(confusions),
        "confusion_table": confusions,
        "accept_support": accept_support,
        "pipeline_seconds": round(elapsed, 1),
        "audio_seconds": round(audio_s, 1),
    }


def _count(values: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:  # type: ignore[attr-defined]
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items()))


def format_report(report: dict[str, object]) -> str:
    def pct(name: str) -> str:
        value = report.get(name)
        return "n/a" if value is None else f"{float(value):.2%}"  # type: ignore[arg-type]

    lines = [
        f"store {report['store']}  model {report['model']}",
        f"phrases {report['phrases']} ({report['phrases_errored']} rejected: "
        f"{report['errors_by_reason']}), expected letters {report['expected_letters']}",
        f"letter recognition accuracy   {pct('letter_recognition_accuracy')}",
        f"decision balanced accuracy    {pct('balanced_accuracy')}   (target ≥ 99%)",
        f"misread precision / recall    {pct('misread_precision')} / {pct('misread_recall')}"
        "   (recall target ≥ 97%)",
        f"insertion precision / recall  {pct('insertion_precision')} / {pct('insertion_recall')}",
    ]
    if report.get("letters_timed"):
        lines.append(
            f"span error median / p90       {report['boundary_median_ms']:.0f} / "
            f"{report['boundary_p90_ms']:.0f} ms; within 60 ms {pct('share_within_60ms')}"
            "   (target ≥ 90%)"
        )
    confusions = ", ".join(f"{t}→{p}×{n}" for t, p, n in report["top_confusions"])  # type: ignore[attr-defined]
    lines.append(f"top confusions                {confusions or 'none'}")
    lines.append(
        f"pipeline {report['pipeline_seconds']} s for {report['audio_seconds']} s of audio"
    )
    for name, target in TARGETS.items():
        value = report.get(name)
        verdict = "n/a" if value is None else ("met" if float(value) >= target else "MISSED")  # type: ignore[arg-type]
        lines.append(f"target {name} ≥ {target:.0%}: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__)
    parser.add_argument(
        "--store", type=Path, required=True, help="labeled store (tools.synthesize)"
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/demo-letters"))
    parser.add_argument("--out", type=Path, default=Path("bench/out/eval.json"))
    parser.add_argument(
        "--accept-support",
        default="default",
        help="override the alignments stage's accept_support (a number, or 'none' to judge "
        "by greedy decoding alone)",
    )
    args = parser.parse_args(argv)
    support: float | str | None = args.accept_support
    if support == "none":
        support = None
    elif support != "default":
        support = float(support)
    report = evaluate(args.store.resolve(), args.model_dir.resolve(), support)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(format_report(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
