"""Aligning what was read to what was expected.

Two alignments answer two questions. The edit-distance alignment of recognized letters to
expected letters decides *what* happened to each expected letter (correct, substituted, deleted,
plus insertions). CTC forced alignment of the expected letters to the emissions decides *when*
each expected letter was (or should have been) spoken and how well the audio supports it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from asr_assets.core.errors import PhraseError, ReasonCode


class EditOp(StrEnum):
    MATCH = "match"
    SUBSTITUTE = "substitute"
    DELETE = "delete"  # an expected letter that was not read
    INSERT = "insert"  # a read letter that was not expected


@dataclass(frozen=True)
class EditStep:
    op: EditOp
    expected_index: int | None
    recognized_index: int | None


def edit_alignment(expected: Sequence[str], recognized: Sequence[str]) -> list[EditStep]:
    """Levenshtein alignment with a deterministic backtrace.

    Ties prefer match/substitution over a deletion+insertion pair, because a child who said the
    wrong letter in the right place substituted it; that is the judgement a teacher makes.
    """
    n, m = len(expected), len(recognized)
    cost = edit_cost_matrix(expected, recognized)
    steps: list[EditStep] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = expected[i - 1] == recognized[j - 1]
            if cost[i][j] == cost[i - 1][j - 1] + (not same):
                steps.append(EditStep(EditOp.MATCH if same else EditOp.SUBSTITUTE, i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            steps.append(EditStep(EditOp.DELETE, i - 1, None))
            i -= 1
        else:
            steps.append(EditStep(EditOp.INSERT, None, j - 1))
            j -= 1
    steps.reverse()
    return steps


def edit_cost_matrix(first: Sequence[str], second: Sequence[str]) -> list[list[int]]:
    """Levenshtein distances of every pair of prefixes, `len(first) + 1` rows of
    `len(second) + 1`.

    Plain Python lists, a row at a time: a phrase is a few letters against a few (a babbling
    model, a hundred), where indexing a numpy array cell by cell cost four times as much and a
    row-vectorized numpy form lost to call overhead on rows this short.
    """
    previous = list(range(len(second) + 1))
    rows = [previous]
    for i, token in enumerate(first, 1):
        row = [i]
        left = i
        for j, other in enumerate(second):
            left = min(previous[j] + (token != other), previous[j + 1] + 1, left + 1)
            row.append(left)
        rows.append(row)
        previous = row
    return rows


@dataclass(frozen=True)
class TokenSpan:
    """Frames [start, end) assigned to one target token, and the mean posterior over them."""

    token_id: int
    start: int
    end: int
    score: float


def min_frames_for(targets: Sequence[int]) -> int:
    """CTC needs one frame per token plus a blank between each pair of equal neighbours."""
    repeats = sum(1 for a, b in itertools.pairwise(targets) if a == b)
    return len(targets) + repeats


def fold_into_blank(log_probs: np.ndarray, blank_id: int, fold_ids: Sequence[int]) -> np.ndarray:
    """Treat non-target tokens (the word separator) as part of the blank for alignment.

    The expected letters carry no separators, but a letter model emits `|` in the pauses; folding
    its mass into blank lets those frames fall between letters instead of being forced onto one.
    """
    folded = log_probs.astype(np.float32, copy=True)
    for token_id in fold_ids:
        folded[:, blank_id] = np.logaddexp(folded[:, blank_id], folded[:, token_id])
    return folded


def get_trellis(
    log_probs: np.ndarray, targets: Sequence[int], blank_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi pass over the CTC topology, vectorised over states (one numpy step per frame).

    States interleave blanks with targets (blank, t1, blank, t2, ..., blank). Returns the best
    log score of reaching each final state and the backpointer offsets (0, 1 or 2) per frame and
    state. A per-cell Python loop is ~100x slower; this is O(T) numpy calls of width 2L+1.
    """
    num_frames = log_probs.shape[0]
    labels = np.full(2 * len(targets) + 1, blank_id, dtype=np.int64)
    labels[1::2] = np.asarray(targets, dtype=np.int64)
    num_states = labels.size
    # A state may be entered from two back only for a target that differs from the previous one:
    # the others get -inf added to that candidate.
    can_skip = np.zeros(num_states, dtype=bool)
    can_skip[3::2] = labels[3::2] != labels[1:-2:2]
    skip_penalty = np.where(can_skip, np.float32(0), np.float32(-np.inf)).astype(np.float32)[2:]
    emit = log_probs[:, labels].astype(np.float32, copy=False)  # (T, S)
    neg_inf = np.float32(-np.inf)
    # Each frame's incoming scores are kept: the forward pass is then three in-place maxima
    # and an add per frame, and the backpointers are computed for all frames at once after it.
    scores = np.full((num_frames, num_states), neg_inf, dtype=np.float32)
    scores[0, 0] = emit[0, 0]
    if num_states > 1:
        scores[0, 1] = emit[0, 1]
    skipped = np.empty(max(0, num_states - 2), dtype=np.float32)
    for t in range(1, num_frames):
        previous, current = scores[t - 1], scores[t]
        current[:] = previous
        np.maximum(current[1:], previous[:-1], out=current[1:])
        np.add(previous[:-2], skip_penalty, out=skipped)
        np.maximum(current[2:], skipped, out=current[2:])
        current += emit[t]
    backpointers = np.zeros((num_frames, num_states), dtype=np.int8)
    if num_frames > 1:
        # argmax over (stay, step, skip) with its tie rule: the first of equal candidates wins.
        stay = scores[:-1]
        step = np.full_like(stay, neg_inf)
        step[:, 1:] = stay[:, :-1]
        skip = np.full_like(stay, neg_inf)
        skip[:, 2:] = stay[:, :-2] + skip_penalty
        best = np.where(step >= skip, 1, 2).astype(np.int8)
        best[(stay >= step) & (stay >= skip)] = 0
        backpointers[1:] = best
    return scores[-1], backpointers


def backtrack(final_score: np.ndarray, backpointers: np.ndarray, num_targets: int) -> np.ndarray:
    """Best state per frame, ending in the last target or the trailing blank."""
    num_frames, num_states = backpointers.shape
    last = num_states - 1
    state = last if num_states == 1 or final_score[last] >= final_score[last - 1] else last - 1
    if not np.isfinite(final_score[state]):
        raise PhraseError(ReasonCode.ALIGNMENT_FAILED, "no complete CTC path through the trellis")
    path = np.empty(num_frames, dtype=np.int64)
    for t in range(num_frames - 1, -1, -1):
        path[t] = state
        state -= int(backpointers[t, state])
    if state > 1:
        raise PhraseError(ReasonCode.ALIGNMENT_FAILED, "backtrace did not reach the first target")
    del num_targets
    return path


def merge_repeats(
    path: np.ndarray, log_probs: np.ndarray, targets: Sequence[int]
) -> list[TokenSpan]:
    """Collapse the per-frame state path into one span per target token."""
    spans: list[TokenSpan] = []
    for index, token_id in enumerate(targets):
        frames = np.flatnonzero(path == 2 * index + 1)
        if frames.size == 0:  # cannot happen for a complete path; guarded for clarity
            raise PhraseError(ReasonCode.ALIGNMENT_FAILED, f"target {index} received no frame")
        posterior = float(np.exp(log_probs[frames, token_id].astype(np.float64)).mean())
        spans.append(TokenSpan(int(token_id), int(frames[0]), int(frames[-1]) + 1, posterior))
    return spans


def _check_length(log_probs: np.ndarray, targets: Sequence[int]) -> None:
    needed = min_frames_for(targets)
    if log_probs.shape[0] < needed:
        raise PhraseError(
            ReasonCode.AUDIO_TOO_SHORT_FOR_SEQUENCE,
            f"{log_probs.shape[0]} frames cannot hold {len(targets)} letters (need {needed})",
        )


def forced_align(
    log_probs: np.ndarray,
    targets: Sequence[int],
    blank_id: int,
    fold_ids: Sequence[int] = (),
) -> list[TokenSpan]:
    """CTC forced alignment of `targets` to (T, V) log-probabilities, by the compiled kernel.

    Same paths as `forced_align_reference` (the numpy trellis, kept as the specification the
    tests compare against), at compiled speed. Raises `PhraseError(AUDIO_TOO_SHORT_FOR_SEQUENCE)`
    when there are fewer frames than the sequence needs; the caller marks those letters
    `unaligned` rather than dropping them.
    """
    from asr_assets.core.alignment_kernel import BACKTRACE_SHORT, NO_COMPLETE_PATH, viterbi_spans

    if len(targets) == 0:
        return []
    _check_length(log_probs, targets)
    emissions = fold_into_blank(log_probs, blank_id, fold_ids) if fold_ids else log_probs
    status, starts, ends, posteriors = viterbi_spans(emissions, np.asarray(targets), blank_id)
    if status == NO_COMPLETE_PATH:
        raise PhraseError(ReasonCode.ALIGNMENT_FAILED, "no complete CTC path through the trellis")
    if status == BACKTRACE_SHORT:
        raise PhraseError(ReasonCode.ALIGNMENT_FAILED, "backtrace did not reach the first target")
    if (starts < 0).any():  # cannot happen for a complete path; guarded for clarity
        index = int(np.argmax(starts < 0))
        raise PhraseError(ReasonCode.ALIGNMENT_FAILED, f"target {index} received no frame")
    return [
        TokenSpan(int(token), int(start), int(end), float(posterior))
        for token, start, end, posterior in zip(
            targets, starts.tolist(), ends.tolist(), posteriors.tolist(), strict=True
        )
    ]


def forced_align_reference(
    log_probs: np.ndarray,
    targets: Sequence[int],
    blank_id: int,
    fold_ids: Sequence[int] = (),
) -> list[TokenSpan]:
    """The numpy trellis: one vectorised step per frame; the reference `forced_align` matches."""
    if len(targets) == 0:
        return []
    _check_length(log_probs, targets)
    emissions = fold_into_blank(log_probs, blank_id, fold_ids) if fold_ids else log_probs
    final, backpointers = get_trellis(emissions, targets, blank_id)
    path = backtrack(final, backpointers, len(targets))
    return merge_repeats(path, emissions, targets)


class SpanMode(StrEnum):
    """How a letter's forced-aligned frames become its reported time span."""

    ALIGNED = "aligned"  # the forced-aligned frames as they are
    ENERGY = "energy"  # widened to the pauses, then trimmed to voiced frames (`widen_spans`)
    AUTO = "auto"  # aligned when the model's posteriors cover letters, energy when they spike


# A letter name lasts 150-500 ms. A model trained to cover it (the demo model's frame loss) gives
# forced-aligned runs of many 20 ms frames; a spiky CTC model (most fine-tuned wav2vec2) gives
# one or two. Three frames separates the two kinds with a wide margin on both sides.
SPIKY_MEDIAN_FRAMES = 3


def resolve_span_mode(spans: Sequence[TokenSpan], mode: SpanMode) -> SpanMode:
    """AUTO decided from the spans: ENERGY when they are spikes, else ALIGNED.

    Callers ask before they decode audio: only ENERGY needs the clip's frame energies.
    """
    if mode is not SpanMode.AUTO:
        return mode
    lengths = [span.end - span.start for span in spans]
    spiky = bool(lengths) and float(np.median(lengths)) < SPIKY_MEDIAN_FRAMES
    return SpanMode.ENERGY if spiky else SpanMode.ALIGNED


def letter_spans(
    spans: Sequence[TokenSpan],
    num_frames: int,
    frame_energy_db: np.ndarray | None = None,
    mode: SpanMode = SpanMode.AUTO,
) -> list[tuple[int, int]]:
    """Reported [start, end) frames of each letter under `mode`.

    Why a choice: widening is what a spiky model needs, but on a model whose posteriors already
    cover the spoken letter it only adds error (measured on held-out synthetic voices with the
    demo model: 88% of letters within 60 ms at both edges as aligned, 83% widened).
    """
    mode = resolve_span_mode(spans, mode)
    if mode is SpanMode.ALIGNED:
        return [(span.start, span.end) for span in spans]
    return widen_spans(spans, num_frames, frame_energy_db)


def widen_spans(
    spans: Sequence[TokenSpan],
    num_frames: int,
    frame_energy_db: np.ndarray | None = None,
    *,
    silence_below_peak_db: float = 35.0,
    floor_fraction: float = 0.3,
) -> list[tuple[int, int]]:
    """Turn spiky CTC token spans into spans covering the spoken letter.

    CTC fires a letter for one or two frames somewhere inside the spoken letter name. Neighbours
    split the frames between their peaks at the quietest frame (the pause between two letter
    names), or at the midpoint without energies; each letter then gives back leading and trailing
    frames that are silent, so pauses are not counted as the letter. "Silent" is relative to both
    the phrase's loudest frame and its noise floor, so background noise does not make every
    frame look voiced.
    """
    energy = (
        frame_energy_db
        if frame_energy_db is not None and frame_energy_db.size >= num_frames > 0
        else None
    )
    bounds = [0]
    for a, b in itertools.pairwise(spans):
        if energy is not None and b.start > a.end:
            bounds.append(a.end + int(np.argmin(energy[a.end : b.start])))
        else:
            bounds.append((a.end + b.start) // 2)
    bounds.append(num_frames)
    threshold = None
    if energy is not None:
        peak = float(energy[:num_frames].max())
        floor = _tenth_percentile(energy[:num_frames])
        threshold = max(peak - silence_below_peak_db, floor + floor_fraction * (peak - floor))
    widened: list[tuple[int, int]] = []
    for index, span in enumerate(spans):
        start = min(bounds[index], span.start)
        end = max(bounds[index + 1], span.end)
        if energy is not None and threshold is not None:
            voiced = energy[start:end] >= threshold
            if voiced.any():
                first = int(np.argmax(voiced))
                last = int(voiced.size - np.argmax(voiced[::-1]))
                start, end = min(start + first, span.start), max(start + last, span.end)
        widened.append((start, end))
    return widened


def _tenth_percentile(values: np.ndarray) -> float:
    """`np.percentile(values, 10)` (linear interpolation), from one partial sort.

    The same operands and dtypes as numpy's (its neighbours as scalars of the array's dtype, its
    weight as a float64 array, the far neighbour used when the weight is at least 0.5), so the
    silence threshold does not move by an ulp; numpy's general function spends ~5x this in
    argument handling on a phrase's few hundred frames.
    """
    position = 0.1 * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    ordered = np.partition(values, (low, high))
    below, above = ordered[low], ordered[high]
    weight = np.asarray(position - low)
    span = above - below
    if weight >= 0.5:
        return float(above - span * (1 - weight))
    return float(below + span * weight)


def frame_energy_db(
    samples: np.ndarray, num_frames: int, stride_samples: int | None = None
) -> np.ndarray:
    """Per-emission-frame energy in dB.

    With the model's stride, frame k covers samples [k*stride, (k+1)*stride), the same grid the
    aligner turns into seconds; without it frames are spread evenly over the clip.
    """
    if num_frames <= 0 or samples.size == 0:
        return np.zeros(0, dtype=np.float32)
    if stride_samples:
        return _strided_energy_db(samples, num_frames, stride_samples)
    edges = np.linspace(0, samples.size, num_frames + 1).astype(np.int64)
    squares = np.concatenate(([0.0], np.cumsum(np.square(samples, dtype=np.float64))))
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    energy = (squares[edges[1:]] - squares[edges[:-1]]) / counts
    return (10.0 * np.log10(energy + 1e-10)).astype(np.float32)


def _strided_energy_db(samples: np.ndarray, num_frames: int, stride: int) -> np.ndarray:
    """Frames on the model's grid as rows of one reshaped view: one dot product per frame.

    A running sum over the whole clip (the even-spread path) costs a float64 copy and a cumsum
    of every sample; on the stride grid the frames are contiguous rows, and a short clip's
    partial last frame and the empty frames past its end are the only special cases.
    """
    flat = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    full = min(num_frames, flat.size // stride)
    energy = np.zeros(num_frames, dtype=np.float64)
    if full:
        rows = flat[: full * stride].reshape(full, stride)
        energy[:full] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64) / stride
    if full < num_frames and full * stride < flat.size:  # the clip ends inside this frame
        tail = flat[full * stride :].astype(np.float64)
        energy[full] = float(tail @ tail) / tail.size
    return (10.0 * np.log10(energy + 1e-10)).astype(np.float32)
