"""The compiled CTC Viterbi kernel behind `forced_align`.

The numpy trellis in `alignment.py` is exact but pays Python overhead once per frame (about
2 ms for a 500-frame phrase); compiled, the same recurrence is a few microseconds of arithmetic.
The kernel reproduces the numpy reference bit for bit: float32 scores, ties resolved to the
lowest backpointer (stay, then advance one, then skip), the same choice of final state. numba is
imported on first use, so importing the package does not pay for the compiler; compiled code is
cached on disk (`cache=True`) so a new process loads it instead of compiling again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

#: Kernel status codes; the caller turns them into `PhraseError`s with the reference's messages.
OK = 0
NO_COMPLETE_PATH = 1
BACKTRACE_SHORT = 2


def _viterbi_spans(
    emissions: np.ndarray,
    targets: np.ndarray,
    blank_id: int,
    starts: np.ndarray,
    ends: np.ndarray,
    posteriors: np.ndarray,
) -> int:
    """Trellis, backtrace and per-target spans in one pass; written for numba's nopython mode."""
    num_frames = emissions.shape[0]
    num_targets = targets.shape[0]
    num_states = 2 * num_targets + 1
    labels = np.full(num_states, blank_id, dtype=np.int64)
    can_skip = np.zeros(num_states, dtype=np.bool_)
    for index in range(num_targets):
        labels[2 * index + 1] = targets[index]
        if index > 0 and targets[index] != targets[index - 1]:
            can_skip[2 * index + 1] = True
    neg_inf = np.float32(-np.inf)
    previous = np.full(num_states, neg_inf, dtype=np.float32)
    current = np.empty(num_states, dtype=np.float32)
    backpointers = np.zeros((num_frames, num_states), dtype=np.int8)
    previous[0] = emissions[0, labels[0]]
    if num_states > 1:
        previous[1] = emissions[0, labels[1]]
    for t in range(1, num_frames):
        for s in range(num_states):
            best = previous[s]
            choice = 0
            if s >= 1 and previous[s - 1] > best:
                best = previous[s - 1]
                choice = 1
            if s >= 2 and can_skip[s] and previous[s - 2] > best:
                best = previous[s - 2]
                choice = 2
            current[s] = best + emissions[t, labels[s]]
            backpointers[t, s] = choice
        previous, current = current, previous
    last = num_states - 1
    state = last
    if num_states > 1 and previous[last] < previous[last - 1]:
        state = last - 1
    if not np.isfinite(previous[state]):
        return NO_COMPLETE_PATH
    for index in range(num_targets):
        starts[index] = -1
        ends[index] = -1
        posteriors[index] = 0.0
    for t in range(num_frames - 1, -1, -1):
        if state % 2 == 1:
            index = (state - 1) // 2
            if ends[index] < 0:
                ends[index] = t + 1
            starts[index] = t
            posteriors[index] += np.exp(np.float64(emissions[t, labels[state]]))
        state -= backpointers[t, state]
    if state > 1:
        return BACKTRACE_SHORT
    for index in range(num_targets):
        if starts[index] >= 0:
            posteriors[index] /= ends[index] - starts[index]
    return OK


@cache
def compiled_kernel() -> Callable[..., int]:
    """The numba-compiled kernel, built (or loaded from the on-disk cache) once per process."""
    import numba

    compiled: Any = numba.njit(cache=True, nogil=True)(_viterbi_spans)
    return compiled


def viterbi_spans(
    emissions: np.ndarray, targets: np.ndarray, blank_id: int
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(status, starts, ends, mean posteriors) per target; -1 start means no frame was assigned."""
    emissions = np.ascontiguousarray(emissions, dtype=np.float32)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    starts = np.empty(targets.size, dtype=np.int64)
    ends = np.empty(targets.size, dtype=np.int64)
    posteriors = np.empty(targets.size, dtype=np.float64)
    status = compiled_kernel()(emissions, targets, int(blank_id), starts, ends, posteriors)
    return int(status), starts, ends, posteriors
