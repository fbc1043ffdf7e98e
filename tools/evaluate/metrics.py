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
from collections.abc import Iterable, Mapping
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
                )
            )
        elif rejected.get(phrase) in NOTHING_READ_REASONS:
            outcomes.append(LetterOutcome(**common, predicted_status="deleted", recognized=None))  # type: ignore[arg-type]
        else:
            outcomes.append(LetterOutcome(**common, predicted_status=None, recognized=None))  # type: ignore[arg-type]
    return outcomes


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def decision_metrics(outcomes: Iterable[LetterOutcome]) -> dict[str, float | int | None]:
    judged = [o for o in outcomes if o.predicted_status is not None]
    truly_misread = [o.true_status in MISREAD for o in judged]
    called_misread = [o.predicted_status != "correct" for o in judged]
    tp = sum(t and p for t, p in zip(truly_misread, called_misread, strict=True))
    fn = sum(t and not p for t, p in zip(truly_misread, called_misread, strict=True))
    fp = sum(p and not t for t, p in zip(truly_misread, called_misread, strict=True))
    tn = sum(not t and not p for t, p in zip(truly_misread, called_misread, strict=True))
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
