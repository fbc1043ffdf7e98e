"""Model-card figures on a labeled store, from the audio files, with a minimal scorer.

This mirrors the pipeline's scoring closely enough to choose checkpoints and write the model card:
decode each phrase's file (downmix, resample to 16 kHz, cut by offsets), run the feature extractor
and model, decode greedily, align recognized to expected letters by edit distance, and take letter
times from CTC forced alignment of the recognized letters. The benchmark of record is
``tools/evaluate`` (``make eval``), which runs the real pipeline code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
import soxr
import torch

from asr_assets.core.alignment import edit_alignment
from tools.train.metrics import TOLERANCE_S, forced_align, frames_to_seconds
from tools.train.vocab import greedy_letters

SR = 16_000


def align_letters(expected: str, recognized: str) -> list[tuple[int | None, int | None]]:
    """The platform's edit alignment as (expected index | None, recognized index | None) pairs."""
    return [
        (step.expected_index, step.recognized_index)
        for step in edit_alignment(list(expected), list(recognized))
    ]


def load_phrase(root: Path, row: dict) -> np.ndarray:
    audio, sr = sf.read(str(root / row["audio_key"]), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if row["audio_start_s"] is not None:
        mono = mono[round(row["audio_start_s"] * sr) : round(row["audio_end_s"] * sr)]
    if sr != SR:
        mono = soxr.resample(mono, sr, SR, quality="HQ")
    return np.asarray(mono, dtype=np.float32)


@dataclass
class StoreResult:
    tp_ok: int = 0  # truly correct, judged correct
    fn_ok: int = 0  # truly correct, judged incorrect
    tp_bad: int = 0  # truly misread, judged incorrect
    fn_bad: int = 0  # truly misread, judged correct
    recognized_right: int = 0
    letters: int = 0
    start_err: list[float] = field(default_factory=list)
    end_err: list[float] = field(default_factory=list)
    confusions: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        tpr_ok = self.tp_ok / max(1, self.tp_ok + self.fn_ok)
        tpr_bad = self.tp_bad / max(1, self.tp_bad + self.fn_bad)
        s = np.abs(np.array(self.start_err or [0.0]))
        e = np.abs(np.array(self.end_err or [0.0]))
        return {
            "letters": self.letters,
            "letter_recognition_accuracy": self.recognized_right / max(1, self.letters),
            "decision_balanced_accuracy": (tpr_ok + tpr_bad) / 2,
            "misread_recall": tpr_bad,
            "misread_precision": self.tp_bad / max(1, self.tp_bad + self.fn_ok),
            "span_within_60ms": float(((s <= TOLERANCE_S) & (e <= TOLERANCE_S)).mean()),
            "start_median_ms": float(np.median(s) * 1000),
            "start_p90_ms": float(np.percentile(s, 90) * 1000),
            "end_median_ms": float(np.median(e) * 1000),
            "end_p90_ms": float(np.percentile(e, 90) * 1000),
        }


@torch.no_grad()
def benchmark_store(model_dir: Path, root: Path) -> StoreResult:
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    model = AutoModelForCTC.from_pretrained(str(model_dir)).eval()
    fe = AutoFeatureExtractor.from_pretrained(str(model_dir))
    rows = []
    for part in sorted((root / "catalog" / "activities").glob("*/part-0.parquet")):
        rows += pq.read_table(part).to_pylist()
    phrases = {
        (r["activity_id"], r["phrase_index"]): r
        for r in pq.read_table(root / "ground_truth" / "phrases.parquet").to_pylist()
    }
    truth: dict[tuple[str, int], list[dict]] = {}
    for r in pq.read_table(root / "ground_truth" / "letters.parquet").to_pylist():
        truth.setdefault((r["activity_id"], r["phrase_index"]), []).append(r)
    res = StoreResult()
    for row in rows:
        key = (row["activity_id"], row["phrase_index"])
        if phrases[key]["kind"] == "corrupt":
            continue
        audio = load_phrase(root, row)
        feats = fe(audio, sampling_rate=SR, return_tensors="pt")
        lp = torch.log_softmax(model(**feats).logits[0].float(), dim=-1).numpy()
        hyp, _ = greedy_letters(lp.argmax(axis=-1).tolist())
        expected = row["expected_text"].replace(" ", "")
        spans = forced_align(lp, hyp) if hyp else []
        judged: dict[int, tuple[str, int | None]] = {}
        for ei, hj in align_letters(expected, hyp):
            if ei is None:
                continue
            ok = hj is not None and hyp[hj] == expected[ei]
            judged[ei] = ("correct" if ok else "incorrect", hj)
        for lab in truth.get(key, []):
            if lab["true_status"] == "inserted":
                continue
            ei = lab["letter_index"]
            verdict, hj = judged[ei]
            res.letters += 1
            heard = lab["spoken_letter"] or "-"
            said = hyp[hj] if hj is not None else "-"
            res.recognized_right += int(heard == said)
            if heard != said:
                pair = f"{heard}->{said}"
                res.confusions[pair] = res.confusions.get(pair, 0) + 1
            truly_ok = lab["true_status"] == "correct"
            if truly_ok:
                res.tp_ok += verdict == "correct"
                res.fn_ok += verdict != "correct"
            else:
                res.tp_bad += verdict != "correct"
                res.fn_bad += verdict == "correct"
            if truly_ok and verdict == "correct" and hj is not None and spans[hj][0] >= 0:
                s, e = frames_to_seconds(*spans[hj])
                res.start_err.append(s - lab["true_start_s"])
                res.end_err.append(e - lab["true_end_s"])
    return res


def main_benchmark(model_dir: Path, root: Path) -> dict:
    res = benchmark_store(model_dir, root)
    out = res.summary()
    top = sorted(res.confusions.items(), key=lambda kv: -kv[1])[:15]
    out["top_confusions"] = dict(top)
    print(json.dumps(out, indent=2))
    return out
