"""Scoring metrics against ground truth, as pure functions so they can be tested by hand.

Definitions (per expected letter unless stated):
- *letter recognition accuracy*: the predicted recognized letter (none for a deletion) equals the
  letter truly spoken (none when truly deleted);
- *decision*: each letter is judged correct or misread (substituted/deleted/unaligned); balanced
  accuracy averages the recall of both classes, so a model cannot score well by calling
  everything correct when misreads are rare;
- *misread detection*: precision and recall with misread as the positive class;
- *span error*: |predicted − true| start and end in ms, for letters truly spoken;
- a phrase the pipeline rejected as silent or too short counts as every letter deleted (a teacher
  hears nothing); phrases rejected for other reasons are left out of the decision and counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NOTHING_READ_REASONS = frozenset({"audio_silent", "audio_too_short"})
MISREAD = frozenset({"substituted", "deleted"})


@dataclass(frozen=True)
class LetterOutcome:
    """One expected letter: what was true and what the pipeline said."""

    true_status: str
    spoken: str | None
    predicted_status: str | None  # None: the phrase was rejected for a non-silence reason
    recognized: str | None
    true_start_s: float | None = None
    true_end_s: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    #: The row's confidence; under the calibrated judgement, P(read correctly).
    confidence: float | None = None


def join_outcomes(
    truth: Iterable[Mapping[str, object]],
    letters: Iterable[Mapping[str, object]],
    errors: Iterable[Mapping[str, object]],
) -> list[LetterOutcome]:
    """Pair each expected letter of the truth with the pipeline's row for it."""
    predicted = {
        (row["activity_id"], row["phrase_index"], row["letter_index"]): row
        for row in letters
        if row["status"] != "inserted"
    }
    rejected = {
        (row["activity_id"], row["phrase_index"]): str(row["reason_code"]) for row in errors
    }
    outcomes = []
    for row in truth:
        if row["true_status"] == "inserted":
            continue
        key = (row["activity_id"], row["phrase_index"], row["letter_index"])
        phrase = (row["activity_id"], row["phrase_index"])
        spoken = row["spoken_letter"] if row["true_status"] != "deleted" else None
        common = {
            "true_status": str(row["true_status"]),
            "spoken": spoken,
            "true_start_s": row.get("true_start_s"),
            "true_end_s": row.get("true_end_s"),
        }
        if key in predicted:
            pred = predicted[key]
            outcomes.append(
                LetterOutcome(
                    **common,  # type: ignore[arg-type]
                    predicted_status=str(pred["status"]),
                    recognized=pred.get("recognized"),  # type: ignore[arg-type]
                    start_s=pred.get("start_s"),  # type: ignore[arg-type]
                    end_s=pred.get("end_s"),  # type: ignore[arg-type]
                    confidence=pred.get("confidence"),  # type: ignore[arg-type]
                )
            )
        elif rejected.get(phrase) in NOTHING_READ_REASONS:
            outcomes.append(LetterOutcome(**common, predicted_status="deleted", recognized=None))  # type: ignore[arg-type]
        else:
            outcomes.append(LetterOutcome(**common, predicted_status=None, recognized=None))  # type: ignore[arg-type]
    return outcomes


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _decision_cell(outcome: LetterOutcome) -> int:
    """The judged letter's cell of the misread confusion matrix: 0 true positive (misread,
    flagged), 1 false negative, 2 false positive, 3 true negative."""
    truly = outcome.true_status in MISREAD
    called = outcome.predicted_status != "correct"
    return (0 if called else 1) if truly else (2 if called else 3)


def decision_metrics(outcomes: Iterable[LetterOutcome]) -> dict[str, float | int | None]:
    judged = [o for o in outcomes if o.predicted_status is not None]
    cells = Counter(_decision_cell(o) for o in judged)
    tp, fn, fp, tn = (cells[i] for i in range(4))
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    balanced = (
        (recall + specificity) / 2 if recall is not None and specificity is not None else None
    )
    return {
        "letters_judged": len(judged),
        "true_misreads": tp + fn,
        "true_positive": tp,
        "false_negative": fn,
        "false_positive": fp,
        "true_negative": tn,
        "balanced_accuracy": balanced,
        "misread_precision": _ratio(tp, tp + fp),
        "misread_recall": recall,
        "correct_recall": specificity,
    }


def recognition_accuracy(outcomes: Iterable[LetterOutcome]) -> float | None:
    judged = [o for o in outcomes if o.predicted_status is not None]
    return _ratio(sum(o.recognized == o.spoken for o in judged), len(judged))


def span_errors(
    outcomes: Iterable[LetterOutcome], tolerance_ms: float = 60.0
) -> dict[str, float | int | None]:
    starts, ends, within = [], [], 0
    for o in outcomes:
        if None in (o.true_start_s, o.true_end_s, o.start_s, o.end_s) or o.spoken is None:
            continue
        start_err = abs(float(o.start_s) - float(o.true_start_s)) * 1000  # type: ignore[arg-type]
        end_err = abs(float(o.end_s) - float(o.true_end_s)) * 1000  # type: ignore[arg-type]
        starts.append(start_err)
        ends.append(end_err)
        within += start_err <= tolerance_ms and end_err <= tolerance_ms
    if not starts:
        return {"letters_timed": 0}
    both = np.array(starts + ends)
    return {
        "letters_timed": len(starts),
        "start_median_ms": float(np.median(starts)),
        "start_p90_ms": float(np.percentile(starts, 90)),
        "end_median_ms": float(np.median(ends)),
        "end_p90_ms": float(np.percentile(ends, 90)),
        "boundary_median_ms": float(np.median(both)),
        "boundary_p90_ms": float(np.percentile(both, 90)),
        f"share_within_{int(tolerance_ms)}ms": within / len(starts),
    }


def confusion_table(outcomes: Iterable[LetterOutcome]) -> dict[str, dict[str, int]]:
    """Truly spoken letter ('-' = nothing) → recognized letter ('-' = nothing) → count."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        if o.predicted_status is None:
            continue
        table[o.spoken or "-"][o.recognized or "-"] += 1
    return {truth: dict(sorted(row.items())) for truth, row in sorted(table.items())}


def top_confusions(
    table: Mapping[str, Mapping[str, int]], limit: int = 10
) -> list[tuple[str, str, int]]:
    pairs = [
        (truth, predicted, count)
        for truth, row in table.items()
        for predicted, count in row.items()
        if truth != predicted
    ]
    return sorted(pairs, key=lambda item: (-item[2], item[0], item[1]))[:limit]


def insertion_metrics(
    truth: Iterable[Mapping[str, object]], letters: Iterable[Mapping[str, object]]
) -> dict[str, float | int | None]:
    """Inserted letters matched per phrase by count (their positions are not compared)."""
    true_counts = Counter(
        (r["activity_id"], r["phrase_index"]) for r in truth if r["true_status"] == "inserted"
    )
    predicted_counts = Counter(
        (r["activity_id"], r["phrase_index"]) for r in letters if r["status"] == "inserted"
    )
    matched = sum(min(true_counts[k], predicted_counts[k]) for k in true_counts)
    return {
        "true_insertions": sum(true_counts.values()),
        "predicted_insertions": sum(predicted_counts.values()),
        "insertion_precision": _ratio(matched, sum(predicted_counts.values())),
        "insertion_recall": _ratio(matched, sum(true_counts.values())),
    }


def review_metrics(outcomes: Iterable[LetterOutcome]) -> dict[str, float | int | None]:
    """The calibrated judgement's view: how many letters go to a teacher, and how good the
    decisions are on the letters it did decide (correct or misread, not `uncertain`)."""
    judged = [o for o in outcomes if o.predicted_status is not None]
    decided = [o for o in judged if o.predicted_status != "uncertain"]
    metrics = decision_metrics(decided)
    uncertain = [o for o in judged if o.predicted_status == "uncertain"]
    return {
        "letters_uncertain": len(uncertain),
        "uncertain_share": _ratio(len(uncertain), len(judged)),
        "uncertain_truly_misread": sum(o.true_status in MISREAD for o in uncertain),
        "decided_balanced_accuracy": metrics["balanced_accuracy"],
        "decided_misread_recall": metrics["misread_recall"],
        "decided_misread_precision": metrics["misread_precision"],
    }


def _scored(outcomes: Iterable[LetterOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """P(read correctly) and the truth (1 = truly correct) for letters with a confidence."""
    rows = [
        (float(o.confidence), o.true_status == "correct")
        for o in outcomes
        if o.confidence is not None and o.predicted_status not in (None, "unaligned")
    ]
    if not rows:
        return np.zeros(0), np.zeros(0, dtype=bool)
    probs, truth = zip(*rows, strict=True)
    return np.asarray(probs, dtype=np.float64), np.asarray(truth, dtype=bool)


def reliability(outcomes: Iterable[LetterOutcome], bins: int = 10) -> dict[str, object]:
    """Reliability diagram of P(read correctly): per confidence bin, the mean confidence against
    the share truly correct; ECE is their gap weighted by bin size."""
    probs, truth = _scored(outcomes)
    table = []
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        mask = (probs >= lo) & ((probs < hi) if b < bins - 1 else (probs <= hi))
        n = int(mask.sum())
        if n == 0:
            continue
        mean_p, share = float(probs[mask].mean()), float(truth[mask].mean())
        ece += n / len(probs) * abs(mean_p - share)
        table.append(
            {"low": lo, "high": hi, "n": n, "mean_confidence": mean_p, "share_correct": share}
        )
    return {"bins": table, "ece": ece if len(probs) else None, "n": len(probs)}


def misread_curves(outcomes: Iterable[LetterOutcome]) -> dict[str, object]:
    """ROC and precision-recall of detecting misreads with score 1 - P(read correctly).

    Each point is the rule "flag a letter when P(read correctly) < threshold"; the teacher
    reviews every flagged letter, so recall is misreads caught and the false-positive rate is
    correct readings a teacher is sent to check."""
    probs, truth = _scored(outcomes)
    misread = ~truth
    thresholds = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], probs]))
    roc, pr = [], []
    positives, negatives = int(misread.sum()), int((~misread).sum())
    for t in thresholds:
        flagged = probs < t
        tp = int((flagged & misread).sum())
        fp = int((flagged & ~misread).sum())
        tpr = tp / positives if positives else 0.0
        fpr = fp / negatives if negatives else 0.0
        roc.append((fpr, tpr, float(t)))
        if tp + fp:
            pr.append((tpr, tp / (tp + fp), float(t)))
    roc.sort()
    xs = np.array([p[0] for p in roc])
    ys = np.array([p[1] for p in roc])
    auc = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2)) if len(xs) > 1 else None
    return {
        "roc": roc,
        "pr": sorted(pr),
        "roc_auc": auc,
        "positives": positives,
        "negatives": negatives,
    }


def fit_platt(
    scores: np.ndarray, flags: np.ndarray, labels: np.ndarray, l2: float = 1e-3
) -> tuple[float, float, float]:
    """Logistic regression of labels on (logit(score), flag) by Newton steps: (bias, weight,
    flag_weight). A small ridge keeps it finite when the classes separate."""
    x = np.clip(scores.astype(np.float64), 1e-4, 1 - 1e-4)
    design = np.column_stack([np.ones_like(x), np.log(x / (1 - x)), flags.astype(np.float64)])
    y = labels.astype(np.float64)
    beta = np.zeros(3)
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ beta))
        grad = design.T @ (p - y) + l2 * beta
        hess = design.T @ (design * (p * (1 - p))[:, None]) + l2 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(beta[0]), float(beta[1]), float(beta[2])


def insertion_labels(
    truth: Iterable[Mapping[str, object]], letters: Iterable[Mapping[str, object]]
) -> list[tuple[float, bool]]:
    """(confidence, real) per reported insertion: in each phrase the k most confident reported
    insertions count as real, k = the true insertions there (positions are not compared)."""
    true_counts = Counter(
        (r["activity_id"], r["phrase_index"]) for r in truth if r["true_status"] == "inserted"
    )
    by_phrase: dict[tuple[object, object], list[float]] = defaultdict(list)
    for r in letters:
        if r["status"] == "inserted":
            by_phrase[(r["activity_id"], r["phrase_index"])].append(float(r["confidence"]))  # type: ignore[arg-type]
    out = []
    for key, confs in by_phrase.items():
        k = true_counts.get(key, 0)
        for rank, conf in enumerate(sorted(confs, reverse=True)):
            out.append((conf, rank < k))
    return out


def operating_points(
    outcomes: Iterable[LetterOutcome], thresholds: Iterable[float] = (0.2, 0.5, 0.8, 0.95)
) -> list[dict[str, float]]:
    """Misread recall and false-alarm rate when every letter with P(read correctly) < t is sent
    to a teacher (called misread or `uncertain`): the trade-off `review_high` sets."""
    probs, truth = _scored(outcomes)
    misread = ~truth
    points = []
    for t in thresholds:
        flagged = probs < t
        points.append(
            {
                "threshold": float(t),
                "misread_recall": float((flagged & misread).sum() / max(1, misread.sum())),
                "false_alarm_rate": float((flagged & ~misread).sum() / max(1, (~misread).sum())),
                "flagged_share": float(flagged.mean()) if len(probs) else 0.0,
            }
        )
    return points


#: Per phrase, the counts the headline figures are ratios of (see `figures_from_counts`).
COUNT_COLUMNS = ("true_positive", "false_negative", "false_positive", "true_negative", "recognized")
INTERVAL_FIGURES = ("balanced_accuracy", "misread_recall", "letter_recognition_accuracy")


def phrase_counts(
    outcomes: Sequence[LetterOutcome], phrases: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """The decision and recognition counts of each phrase (`phrases[i]` names `outcomes[i]`'s).

    Why per phrase: the letters of one phrase share a voice, a recording and a decoding, so
    their errors come together; resampling phrases, not letters, keeps that in the intervals.
    """
    keys: list[str] = []
    index: dict[str, int] = {}
    rows: list[list[int]] = []
    for outcome, phrase in zip(outcomes, phrases, strict=True):
        if phrase not in index:
            index[phrase] = len(keys)
            keys.append(phrase)
            rows.append([0] * len(COUNT_COLUMNS))
        if outcome.predicted_status is None:
            continue
        row = rows[index[phrase]]
        row[_decision_cell(outcome)] += 1
        row[4] += outcome.recognized == outcome.spoken
    return keys, np.asarray(rows, dtype=np.int64).reshape(-1, len(COUNT_COLUMNS))


def figures_from_counts(totals: np.ndarray) -> dict[str, np.ndarray]:
    """Balanced accuracy, misread recall and letter recognition from summed counts (the last
    axis in `COUNT_COLUMNS` order); NaN where a class is empty."""
    tp, fn, fp, tn, recognized = (totals[..., i].astype(np.float64) for i in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / (tp + fn)
        specificity = tn / (tn + fp)
        return {
            "balanced_accuracy": (recall + specificity) / 2,
            "misread_recall": recall,
            "letter_recognition_accuracy": recognized / (tp + fn + fp + tn),
        }


def _resampled_totals(counts: list[np.ndarray], draws: int, seed: int) -> list[np.ndarray]:
    """Each count table summed under the same `draws` bootstrap resamples of its phrases."""
    n = counts[0].shape[0]
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=draws)
    return [weights @ table for table in counts]


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """The central `level` percentile interval of the finite draws (a class can be empty in
    some resamples); None when no draw is finite."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]


def bootstrap_intervals(
    counts: np.ndarray, draws: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile intervals of the headline figures over phrases resampled with replacement:
    how far the figure of another draw of the same voices and phrases could fall."""
    if counts.shape[0] == 0:
        return dict.fromkeys(INTERVAL_FIGURES)
    (totals,) = _resampled_totals([counts], draws, seed)
    return {name: _interval(values, level) for name, values in figures_from_counts(totals).items()}


def paired_difference(
    base: np.ndarray, candidate: np.ndarray, draws: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float | str | None]]:
    """Candidate minus base for each headline figure on the same phrases, with a paired
    bootstrap interval: both models are resampled with the same phrases, so the voices and
    sentences both got cancel out and only the models' difference is left.

    `verdict` is "better" or "worse" when the interval excludes zero, else "within noise".
    """
    if base.shape != candidate.shape:
        raise ValueError(f"count tables differ in shape: {base.shape} vs {candidate.shape}")
    if base.shape[0] == 0:
        raise ValueError("no phrases to compare")
    point_base = figures_from_counts(base.sum(axis=0))
    point_cand = figures_from_counts(candidate.sum(axis=0))
    totals_base, totals_cand = _resampled_totals([base, candidate], draws, seed)
    resampled_base = figures_from_counts(totals_base)
    resampled_cand = figures_from_counts(totals_cand)
    out: dict[str, dict[str, float | str | None]] = {}
    for name in INTERVAL_FIGURES:
        low, high = _interval(resampled_cand[name] - resampled_base[name], level) or (None, None)
        verdict = "within noise"
        if low is not None and low > 0:
            verdict = "better"
        elif high is not None and high < 0:
            verdict = "worse"
        out[name] = {
            "base": float(point_base[name]),
            "candidate": float(point_cand[name]),
            "difference": float(point_cand[name] - point_base[name]),
            "low": low,
            "high": high,
            "verdict": verdict,
        }
    return out
