"""What each augmentation family's perturbation costs a model, and so what training on it bought.

The same held-out-voice phrases (same seed: same plans, voices and letters) are rendered once
clean and once per family with that family applied to every phrase. Each model is scored on
every set; the table gives the letter error rate per family and its excess over clean.
Comparing a model trained without augmentation to one trained with it shows, family by family,
how much of the damage the augmentation removed.

This is a per-perturbation robustness measure, not a leave-one-family-out ablation (which would
take one training run per family): it says which perturbations a model still fails on, not how
training on one family transfers to another synthesizer. The cross-synthesizer figures of
``make eval`` answer that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.train.augment import available_families
from tools.train.data import PhraseSet, SetSpec, generate_set


def robustness_sets(root: Path, phrases: int, seed: int, workers: int) -> dict[str, PhraseSet]:
    sets: dict[str, PhraseSet] = {}
    for family in ("clean", *available_families()):
        spec = SetSpec(
            phrases,
            (2, 8),
            "heldout",
            seed,
            whole_fraction=1.0,
            chunk_size=50,
            augment=() if family == "clean" else (family,),
            augment_always=family != "clean",
        )
        generate_set(root / family, spec, workers=workers)
        sets[family] = PhraseSet(root / family)
    return sets


def robustness(
    models: list[Path], root: Path, *, phrases: int, seed: int, workers: int, threads: int
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCTC

    from tools.train.metrics import evaluate

    torch.set_num_threads(threads)
    sets = robustness_sets(root, phrases, seed, workers)
    table: dict[str, Any] = {"phrases_per_set": phrases, "models": {}}
    for model_dir in models:
        model = AutoModelForCTC.from_pretrained(str(model_dir)).eval()
        rows: dict[str, dict[str, float]] = {}
        with torch.inference_mode():
            for family, data in sets.items():
                summary = evaluate(model, data).summary()
                rows[family] = {
                    "letter_error_rate": round(summary["letter_error_rate"], 4),
                    "span_within_60ms": round(summary["span_within_60ms"], 4),
                }
        clean = rows["clean"]["letter_error_rate"]
        for row in rows.values():
            row["excess_over_clean"] = round(row["letter_error_rate"] - clean, 4)
        table["models"][str(model_dir)] = rows
        print(json.dumps({"model": str(model_dir), "rows": rows}), flush=True)
    names = list(table["models"])
    if len(names) >= 2:
        first, last = table["models"][names[0]], table["models"][names[-1]]
        table["excess_removed"] = {
            family: round(first[family]["excess_over_clean"] - last[family]["excess_over_clean"], 4)
            for family in first
            if family != "clean"
        }
    print(_markdown(table))
    return table


def _markdown(table: dict[str, Any]) -> str:
    names = list(table["models"])
    head = "| family | " + " | ".join(f"LER {Path(n).name}" for n in names) + " |"
    lines = [head, "|" + " --- |" * (len(names) + 1)]
    for family in table["models"][names[0]]:
        cells = [f"{table['models'][n][family]['letter_error_rate']:.3f}" for n in names]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
