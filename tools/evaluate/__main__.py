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

from asr_assets.core.scoring import DEFAULT_POLICY, Judgement
from tools.evaluate.metrics import (
    COUNT_COLUMNS,
    INTERVAL_FIGURES,
    bootstrap_intervals,
    confusion_table,
    decision_metrics,
    fit_platt,
    insertion_labels,
    insertion_metrics,
    join_outcomes,
    misread_curves,
    operating_points,
    paired_difference,
    phrase_counts,
    recognition_accuracy,
    reliability,
    review_metrics,
    span_errors,
    top_confusions,
)
from tools.evaluate.plot import COLOURS, Series, plot

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
    store: Path,
    model_dir: Path,
    accept_support: float | str | None = "default",
    alignments: dict[str, object] | None = None,
    reuse_emissions: bool = False,
) -> dict[str, object]:
    """Score every day of `store`; `accept_support` and `alignments` override the alignments
    stage's config (`judgement`, `review_low`, ...)."""
    partitions = partitions_of(store)
    # Measure the engine, never the emissions cache of an earlier run (unless asked: comparing
    # judgements of the same emissions).
    ops: dict[str, object] = {"transcripts": {"config": {"reuse_emissions": reuse_emissions}}}
    align_config: dict[str, object] = dict(alignments or {})
    if accept_support != "default":
        align_config["accept_support"] = accept_support
    if align_config:
        ops["alignments"] = {"config": align_config}
    run_config = {"ops": ops}
    started = time.perf_counter()
    rows = run_pipeline(store, model_dir, partitions, run_config)
    elapsed = time.perf_counter() - started
    truth = pq.read_table(store / "ground_truth" / "letters.parquet").to_pylist()
    outcomes = join_outcomes(truth, rows["letter_scores"], rows["errors"])
    voice_of = {
        (p["activity_id"], p["phrase_index"]): p["voice"]
        for p in pq.read_table(store / "ground_truth" / "phrases.parquet").to_pylist()
    }
    by_voice: dict[str, list] = {}
    phrase_of: list[str] = []
    for row, o in zip((r for r in truth if r["true_status"] != "inserted"), outcomes, strict=True):
        by_voice.setdefault(voice_of[(row["activity_id"], row["phrase_index"])], []).append(o)
        phrase_of.append(f"{row['activity_id']}:{row['phrase_index']}")
    phrase_keys, counts = phrase_counts(outcomes, phrase_of)
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
        "intervals_95": bootstrap_intervals(counts),
        **review_metrics(outcomes),
        **insertion_metrics(truth, rows["letter_scores"]),
        **span_errors(outcomes),
        "top_confusions": top_confusions(confusions),
        "by_voice": {
            voice: {
                "letters": len(group),
                "balanced_accuracy": decision_metrics(group)["balanced_accuracy"],
                "misread_recall": decision_metrics(group)["misread_recall"],
                "letter_recognition_accuracy": recognition_accuracy(group),
            }
            for voice, group in sorted(by_voice.items())
        },
        "confusion_table": confusions,
        "accept_support": accept_support,
        "alignments_config": align_config,
        "reliability": reliability(outcomes),
        "misread_curves": misread_curves(outcomes),
        "operating_points": operating_points(outcomes),
        "insertion_scores": insertion_labels(truth, rows["letter_scores"]),
        # (confidence, greedy read it, truly correct): what `--fit-calibration` fits on.
        "raw_letters": [
            (float(o.confidence), o.predicted_status == "correct", o.true_status == "correct")
            for o in outcomes
            if o.confidence is not None and o.predicted_status not in (None, "unaligned")
        ],
        # What `--compare` pairs two models' runs on (phrase by phrase, same store).
        "phrase_counts": {
            "columns": list(COUNT_COLUMNS),
            "phrases": phrase_keys,
            "counts": counts.tolist(),
        },
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
    intervals: dict[str, list[float] | None] = report.get("intervals_95") or {}  # type: ignore[assignment]
    shown = [
        f"{name.replace('_', ' ')} {bounds[0]:.1%}-{bounds[1]:.1%}"
        for name in INTERVAL_FIGURES
        if (bounds := intervals.get(name))
    ]
    if shown:
        lines.append("95% intervals (phrases resampled)  " + ", ".join(shown))
    if report.get("letters_timed"):
        lines.append(
            f"span error median / p90       {report['boundary_median_ms']:.0f} / "
            f"{report['boundary_p90_ms']:.0f} ms; within 60 ms {pct('share_within_60ms')}"
            "   (target ≥ 90%)"
        )
    if report.get("letters_uncertain"):
        lines.append(
            f"uncertain (for review)        {report['letters_uncertain']} letters "
            f"({pct('uncertain_share')}, {report['uncertain_truly_misread']} truly misread); "
            f"decided: balanced accuracy {pct('decided_balanced_accuracy')}, misread recall "
            f"{pct('decided_misread_recall')}"
        )
    # Under the greedy judgement `confidence` is not P(read correctly): no calibration figures.
    greedy = (report.get("alignments_config") or {}).get("judgement") == Judgement.GREEDY.name  # type: ignore[union-attr]
    rel = {} if greedy else (report.get("reliability") or {})
    if rel.get("ece") is not None:  # type: ignore[union-attr]
        lines.append(
            f"calibration of P(read correctly): ECE {rel['ece']:.3f} over {rel['n']} letters; "  # type: ignore[index]
            "reliability (confidence → share correct): "
            + ", ".join(
                f"{b['mean_confidence']:.2f}→{b['share_correct']:.2f} (n={b['n']})"
                for b in rel["bins"]  # type: ignore[index]
            )
        )
    curves = {} if greedy else (report.get("misread_curves") or {})
    if curves.get("roc_auc") is not None:  # type: ignore[union-attr]
        lines.append(f"misread ROC AUC (score 1 − P(read correctly))  {curves['roc_auc']:.3f}")  # type: ignore[index]
        lines.append(
            "review everything below P: "
            + "; ".join(
                f"<{p['threshold']:.2f}: misread recall {p['misread_recall']:.1%}, "
                f"false alarms {p['false_alarm_rate']:.1%}"
                for p in report.get("operating_points", [])  # type: ignore[union-attr]
            )
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


def store_name(store: Path) -> str:
    """`.tmp/eval-festival` → `festival`; the espeak-ng held-out store keeps its directory name."""
    name = store.name
    if name == "eval-store":
        return "espeak-ng held-out"
    return name[len("eval-") :] if name.startswith("eval-") else name


def summary_table(reports: dict[str, dict[str, object]]) -> str:
    """One line per store: the figures the issue's targets are set on."""

    def pct(report: dict[str, object], name: str) -> str:
        value = report.get(name)
        return "n/a" if value is None else f"{float(value):.1%}"  # type: ignore[arg-type]

    head = (
        "| store | balanced accuracy | misread recall | letter recognition | spans within 60 ms "
        "| insertion precision | uncertain | ECE |"
    )
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in reports.items():
        greedy = (r.get("alignments_config") or {}).get("judgement") == Judgement.GREEDY.name  # type: ignore[union-attr]
        ece = None if greedy else (r.get("reliability") or {}).get("ece")  # type: ignore[union-attr]
        lines.append(
            f"| {name} | {pct(r, 'balanced_accuracy')} | {pct(r, 'misread_recall')} "
            f"| {pct(r, 'letter_recognition_accuracy')} | {pct(r, 'share_within_60ms')} "
            f"| {pct(r, 'insertion_precision')} | {pct(r, 'uncertain_share')} "
            f"| {'n/a' if ece is None else f'{ece:.3f}'} |"
        )
    return "\n".join(lines)


def write_plots(reports: dict[str, dict[str, object]], out_dir: Path) -> list[str]:
    """ROC, precision-recall and reliability PNGs, one curve per store; returns the legend."""
    roc, pr, rel = [], [], []
    for report in reports.values():
        curves = report["misread_curves"]
        config = report.get("alignments_config") or {}
        low = float(config.get("review_low", DEFAULT_POLICY.review_low or 0.0))  # type: ignore[union-attr, arg-type]
        high = float(config.get("review_high", DEFAULT_POLICY.review_high or 0.0))  # type: ignore[union-attr, arg-type]
        points = curves["roc"]  # type: ignore[index]
        markers = []
        for threshold in (low, high):  # the operating points: flag below review_low / high
            best = min(points, key=lambda p: abs(p[2] - threshold), default=None)
            if best is not None:
                markers.append((best[0], best[1]))
        roc.append(Series([(p[0], p[1]) for p in points], markers))
        pr.append(Series([(p[0], p[1]) for p in curves["pr"]]))  # type: ignore[index]
        bins = report["reliability"]["bins"]  # type: ignore[index]
        rel.append(
            Series(
                [(b["mean_confidence"], b["share_correct"]) for b in bins],
                [(b["mean_confidence"], b["share_correct"]) for b in bins],
            )
        )
    plot(out_dir / "misread-roc.png", roc, diagonal=True)
    plot(out_dir / "misread-pr.png", pr)
    plot(out_dir / "reliability.png", rel, diagonal=True)
    legend = [f"{colour}: {name}" for (colour, _), name in zip(COLOURS, reports, strict=False)]
    return [
        f"plots in {out_dir}: misread-roc.png (x false-alarm rate, y misread recall; squares: "
        "flag below review_low / below review_high), misread-pr.png (x recall, y precision), "
        "reliability.png (x confidence, y share correct; grey: perfect calibration); "
        + ", ".join(legend)
    ]


def compare_reports(
    base: dict[str, object], candidate: dict[str, object]
) -> dict[str, dict[str, object]]:
    """Per store both runs scored, the candidate's change in each headline figure with a paired
    bootstrap interval: whether a difference between two models is more than the phrases drawn.

    Why: the stores hold a few hundred phrases, so a point or two between two models can be
    the luck of the draw; a model is only "no worse" or "better" when the interval says so.
    """

    import numpy as np

    def stores(report: dict[str, object]) -> dict[str, dict[str, object]]:
        if "stores" in report:
            return report["stores"]  # type: ignore[return-value]
        return {store_name(Path(str(report["store"]))): report}

    def table(store: dict[str, object]) -> np.ndarray:
        rows = store["phrase_counts"]["counts"]  # type: ignore[index]
        return np.asarray(rows, dtype=np.int64).reshape(-1, len(COUNT_COLUMNS))

    base_stores, cand_stores = stores(base), stores(candidate)
    out: dict[str, dict[str, object]] = {}
    for name, b in base_stores.items():
        c = cand_stores.get(name)
        if c is None:
            continue
        if "phrase_counts" not in b or "phrase_counts" not in c:
            raise ValueError(f"{name}: a report without phrase counts (written by older code)")
        bp, cp = b["phrase_counts"], c["phrase_counts"]
        if bp["phrases"] != cp["phrases"]:  # type: ignore[index]
            raise ValueError(f"{name}: the two runs scored different phrases (not the same store)")
        out[name] = paired_difference(table(b), table(c))
    if not out:
        raise ValueError("the two reports share no store")
    return out


def comparison_table(diffs: dict[str, dict[str, object]]) -> str:
    lines = [
        "| store | figure | base | candidate | difference (95% interval) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for store, figures in diffs.items():
        for name, f in figures.items():
            d: dict[str, float | str | None] = f  # type: ignore[assignment]
            interval = (
                "n/a"
                if d["low"] is None
                else f"{float(d['low']) * 100:+.1f} to {float(d['high']) * 100:+.1f}"  # type: ignore[arg-type]
            )
            lines.append(
                f"| {store} | {name.replace('_', ' ')} | {float(d['base']):.1%} "  # type: ignore[arg-type]
                f"| {float(d['candidate']):.1%} | {float(d['difference']) * 100:+.1f} points "  # type: ignore[arg-type]
                f"({interval}) | {d['verdict']} |"
            )
    return "\n".join(lines)


def fit_calibration(reports: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """Platt coefficients from `raw` judgement runs: letters on (support, greedy read it) vs
    truly correct; insertions on their confidence vs real."""
    scores, flags, labels = [], [], []
    ins_scores, ins_labels = [], []
    for report in reports.values():
        for row in report["raw_letters"]:  # type: ignore[attr-defined]
            scores.append(row[0])
            flags.append(row[1])
            labels.append(row[2])
        for conf, real in report["insertion_scores"]:  # type: ignore[attr-defined]
            ins_scores.append(conf)
            ins_labels.append(real)
    import numpy as np

    bias, weight, flag_weight = fit_platt(np.array(scores), np.array(flags), np.array(labels))
    ins = fit_platt(np.array(ins_scores), np.zeros(len(ins_scores)), np.array(ins_labels))
    return {
        "letter": {"bias": bias, "weight": weight, "flag_weight": flag_weight, "n": len(scores)},
        "insertion": {"bias": ins[0], "weight": ins[1], "n": len(ins_scores)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__)
    parser.add_argument(
        "--store",
        type=Path,
        action="append",
        help="labeled store (tools.synthesize); repeat for a per-store table (eval-NAME → NAME)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BASE", "CANDIDATE"),
        help="compare two reports of this tool on the same stores (paired phrase bootstrap); "
        "runs nothing",
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/demo-letters"))
    parser.add_argument(
        "--out", type=Path, help="default bench/out/eval.json (bench/out/compare.json)"
    )
    parser.add_argument("--plots", type=Path, help="write ROC/PR/reliability PNGs here")
    parser.add_argument(
        "--accept-support",
        default="default",
        help="override the alignments stage's accept_support (a number, or 'none' to judge "
        "by greedy decoding alone); only the 'greedy' judgement uses it",
    )
    parser.add_argument("--judgement", choices=[j.value for j in Judgement])
    parser.add_argument("--review-low", type=float)
    parser.add_argument("--review-high", type=float)
    parser.add_argument("--insertion-min", type=float)
    parser.add_argument(
        "--reuse-emissions",
        action="store_true",
        help="reuse the store's emissions cache (to compare judgements of the same emissions)",
    )
    parser.add_argument(
        "--fit-calibration",
        type=Path,
        help="run the 'raw' judgement and write fitted Platt coefficients here (fit on "
        "training-voice stores only)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        if args.store:
            parser.error("--compare reads two reports and runs no store")
        try:
            diffs = compare_reports(
                *(json.loads(path.read_text()) for path in args.compare)  # type: ignore[misc]
            )
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--compare: {exc}")
        out = args.out or Path("bench/out/compare.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(diffs, indent=2))
        print(comparison_table(diffs))
        print(f"wrote {out}")
        return 0
    if not args.store:
        parser.error("--store is required (or --compare BASE CANDIDATE)")
    args.out = args.out or Path("bench/out/eval.json")
    support: float | str | None = args.accept_support
    if support == "none":
        support = None
    elif support != "default":
        support = float(support)
    alignments: dict[str, object] = {}
    for key in ("judgement", "review_low", "review_high", "insertion_min"):
        if getattr(args, key) is not None:
            alignments[key] = getattr(args, key)
    if args.fit_calibration:
        alignments["judgement"] = Judgement.RAW.value
    if "judgement" in alignments:  # Dagster config names enum members by name
        alignments["judgement"] = Judgement(alignments["judgement"]).name
    reports: dict[str, dict[str, object]] = {}
    for store in args.store:
        report = evaluate(
            store.resolve(), args.model_dir.resolve(), support, alignments, args.reuse_emissions
        )
        reports[store_name(store)] = report
        print(format_report(report))
    if args.fit_calibration:
        fitted = fit_calibration(reports)
        args.fit_calibration.parent.mkdir(parents=True, exist_ok=True)
        args.fit_calibration.write_text(json.dumps(fitted, indent=2))
        print(json.dumps(fitted))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for report in reports.values():
        report.pop("raw_letters", None)
    single = next(iter(reports.values())) if len(reports) == 1 else {"stores": reports}
    args.out.write_text(json.dumps(single, indent=2, default=str))
    if len(reports) > 1:
        print(summary_table(reports))
    if args.plots:
        for line in write_plots(reports, args.plots):
            print(line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
