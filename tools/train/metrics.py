"""Quick held-out metrics used during training to pick checkpoints.

These are *model-level* figures on pre-computed features (greedy decoding, CTC forced alignment
to the true spoken letters); the accuracy benchmark of record is ``tools/evaluate``, which runs
the real pipeline from audio files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tools.train.data import PhraseSet, iterate_in_batches
from tools.train.model import output_frames
from tools.train.vocab import (
    BLANK,
    FRAME_CENTRE_OFFSET_S,
    FRAME_S,
    SEPARATOR,
    VOCAB,
    ctc_target,
    greedy_letters,
)

TOLERANCE_S = 0.06


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def forced_align(log_probs: np.ndarray, letters: str) -> list[tuple[int, int]]:
    """Viterbi CTC alignment of ``letters`` (as b | d | p) to (T, V) log-probabilities.

    Returns each letter's (first, last) frame. Separators may be skipped (blank can stand between
    letters), which matches how the model may emit them.
    """
    tokens = ctc_target(letters)
    states = [BLANK]
    for tok in tokens:
        states += [tok, BLANK]
    n_t, n_s = log_probs.shape[0], len(states)
    neg = -1e30
    score = np.full((n_t, n_s), neg)
    back = np.zeros((n_t, n_s), dtype=np.int64)
    score[0, 0] = log_probs[0, states[0]]
    if n_s > 1:
        score[0, 1] = log_probs[0, states[1]]
    # predecessors of each state: standard CTC moves, plus skipping a separator entirely
    # (letter -> [blank] -> letter), since a model may put only blanks between letters
    preds: list[list[int]] = []
    for s in range(n_s):
        cand = [s]
        if s >= 1:
            cand.append(s - 1)
        if s >= 2 and states[s] != BLANK and states[s] != states[s - 2]:
            cand.append(s - 2)
        if states[s] > SEPARATOR and s >= 4 and states[s - 2] == SEPARATOR:
            cand.append(s - 3)
            if states[s - 4] != states[s]:
                cand.append(s - 4)
        preds.append(cand)
    for t in range(1, n_t):
        prev = score[t - 1]
        for s in range(n_s):
            arg = max(preds[s], key=lambda p: prev[p])
            score[t, s] = prev[arg] + log_probs[t, states[s]]
            back[t, s] = arg
    end = n_s - 1 if n_s == 1 or score[-1, -1] >= score[-1, -2] else n_s - 2
    path = [end]
    for t in range(n_t - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    path.reverse()
    letter_states = [i for i, st in enumerate(states) if st > SEPARATOR]
    spans: list[tuple[int, int]] = []
    for ls in letter_states:
        frames = [t for t, s in enumerate(path) if s == ls]
        spans.append((frames[0], frames[-1]) if frames else (-1, -1))
    return spans


def frames_to_seconds(first: int, last: int) -> tuple[float, float]:
    return (
        FRAME_S * first + FRAME_CENTRE_OFFSET_S - FRAME_S / 2,
        FRAME_S * last + FRAME_CENTRE_OFFSET_S + FRAME_S / 2,
    )


@dataclass
class EvalResult:
    phrases: int = 0
    letters: int = 0
    edits: int = 0
    phrase_errors: int = 0
    empty_false_alarms: int = 0
    start_err: list[float] = field(default_factory=list)
    end_err: list[float] = field(default_factory=list)
    by_voice: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        s = np.abs(np.array(self.start_err)) if self.start_err else np.zeros(1)
        e = np.abs(np.array(self.end_err)) if self.end_err else np.zeros(1)
        both = (s <= TOLERANCE_S) & (e <= TOLERANCE_S)
        return {
            "phrases": self.phrases,
            "letter_error_rate": self.edits / max(1, self.letters),
            "phrase_error_rate": self.phrase_errors / max(1, self.phrases),
            "empty_false_alarms": self.empty_false_alarms,
            "span_within_60ms": float(both.mean()),
            "start_median_ms": float(np.median(s) * 1000),
            "end_median_ms": float(np.median(e) * 1000),
            "start_p90_ms": float(np.percentile(s, 90) * 1000),
            "end_p90_ms": float(np.percentile(e, 90) * 1000),
        }


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: PhraseSet, max_frames: int = 6000) -> EvalResult:
    was_training = model.training
    model.eval()
    res = EvalResult()
    for idx, batch in iterate_in_batches(data, max_frames, output_frames(model.config)):
        logits = model(**batch.inputs).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1).numpy()
        lengths = batch.out_lengths.tolist()
        for b, i in enumerate(idx):
            lp = log_probs[b, : lengths[b]]
            truth = batch.spoken[b]
            hyp, _ = greedy_letters(lp.argmax(axis=-1).tolist())
            d = edit_distance(hyp, truth)
            res.phrases += 1
            res.letters += len(truth)
            res.edits += d
            res.phrase_errors += int(d > 0)
            voice = data.meta[i]["voice"].split("+")[-1]
            stats = res.by_voice.setdefault(voice, [0, 0])
            stats[0] += d
            stats[1] += len(truth)
            if not truth:
                res.empty_false_alarms += int(bool(hyp))
                continue
            for (first, last), (ts, te) in zip(
                forced_align(lp, truth), batch.spans[b], strict=True
            ):
                if first < 0:
                    continue
                s, e = frames_to_seconds(first, last)
                res.start_err.append(s - ts)
                res.end_err.append(e - te)
    if was_training:
        model.train()
    return res


__all__ = ["VOCAB", "EvalResult", "edit_distance", "evaluate", "forced_align"]
