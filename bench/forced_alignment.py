"""CTC forced alignment: the compiled kernel, the numpy reference and a naive per-cell loop.

The headline is the random-trellis mix (300 trellises, 40-500 frames, 1-60 targets, repeats):
milliseconds per alignment for the compiled kernel and the numpy reference, same process,
interleaved, with the paths compared.

The naive loop is the obvious implementation (one Python iteration per frame × state); the
guide measured 1.4 s for 500 frames × 60 tokens with it. Both are run here on the same
emissions so the ratio is honest on whatever machine runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from asr_assets.core.alignment import forced_align, forced_align_reference, min_frames_for

BLANK = 0


def naive_viterbi(log_probs: np.ndarray, targets: list[int]) -> list[int]:
    """Textbook per-cell trellis and backtrace; returns the state path."""
    labels = [BLANK]
    for token in targets:
        labels += [token, BLANK]
    frames, states = log_probs.shape[0], len(labels)
    score = np.full((frames, states), -np.inf)
    back = np.zeros((frames, states), dtype=np.int64)
    score[0, 0] = log_probs[0, labels[0]]
    score[0, 1] = log_probs[0, labels[1]]
    for t in range(1, frames):
        for s in range(states):
            best, arg = score[t - 1, s], 0
            if s >= 1 and score[t - 1, s - 1] > best:
                best, arg = score[t - 1, s - 1], 1
            if (
                s >= 2
                and labels[s] != BLANK
                and labels[s] != labels[s - 2]
                and score[t - 1, s - 2] > best
            ):
                best, arg = score[t - 1, s - 2], 2
            score[t, s] = best + log_probs[t, labels[s]]
            back[t, s] = arg
    state = states - 1 if score[-1, -1] >= score[-1, -2] else states - 2
    path = []
    for t in range(frames - 1, -1, -1):
        path.append(state)
        state -= back[t, state]
    return path[::-1]


def naive_torch_viterbi(log_probs: np.ndarray, targets: list[int]) -> None:
    """The same per-cell loop over torch tensors: the slow baseline the guide measured."""
    import torch

    emissions = torch.from_numpy(log_probs)
    labels = [BLANK]
    for token in targets:
        labels += [token, BLANK]
    frames, states = emissions.shape[0], len(labels)
    score = torch.full((frames, states), float("-inf"))
    score[0, 0] = emissions[0, labels[0]]
    score[0, 1] = emissions[0, labels[1]]
    for t in range(1, frames):
        for s in range(states):
            best = score[t - 1, s]
            if s >= 1:
                best = torch.maximum(best, score[t - 1, s - 1])
            if s >= 2 and labels[s] != BLANK and labels[s] != labels[s - 2]:
                best = torch.maximum(best, score[t - 1, s - 2])
            score[t, s] = best + emissions[t, labels[s]]


def _emissions(frames: int, vocab: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).standard_normal((frames, vocab)).astype(np.float32)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def random_mix(count: int = 300, seed: int = 1) -> list[tuple[np.ndarray, list[int]]]:
    """Trellises of 40-500 frames and 1-60 targets (repeats included), half float16-quantized."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        targets = [
            int(t)
            for t in rng.integers(2, 2 + int(rng.choice([2, 4, 26])), int(rng.integers(1, 61)))
        ]
        low = max(40, min_frames_for(targets))
        frames = int(rng.integers(low, max(low, 500) + 1))
        log_probs = _emissions(frames, 30, int(rng.integers(1 << 30)))
        if rng.random() < 0.5:
            log_probs = log_probs.astype(np.float16).astype(np.float32)
        cases.append((log_probs, targets))
    return cases


def mix_ms_per_alignment(rounds: int = 3) -> dict[str, float]:
    """Best-of-`rounds` ms per alignment over the mix, kernel and reference interleaved."""
    cases = random_mix()
    forced_align(*cases[0], BLANK)  # compile or load the kernel outside the timing
    timings: dict[str, list[float]] = {"kernel": [], "numpy_reference": []}
    for _ in range(rounds):
        for name, fn in (("kernel", forced_align), ("numpy_reference", forced_align_reference)):
            started = time.perf_counter()
            for log_probs, targets in cases:
                fn(log_probs, targets, BLANK, [1])
            timings[name].append((time.perf_counter() - started) * 1000 / len(cases))
    same = all(
        [(s.start, s.end) for s in forced_align(lp, t, BLANK, [1])]
        == [(s.start, s.end) for s in forced_align_reference(lp, t, BLANK, [1])]
        for lp, t in cases
    )
    best = {name: min(values) for name, values in timings.items()}
    return {**best, "speedup": best["numpy_reference"] / best["kernel"], "same_paths": same}


def main() -> None:
    mix = mix_ms_per_alignment()
    print(
        f"random mix (300 trellises, 40-500 frames, 1-60 targets): kernel {mix['kernel']:.3f} ms,"
        f" numpy reference {mix['numpy_reference']:.3f} ms per alignment -> "
        f"{mix['speedup']:.1f}x, identical paths: {mix['same_paths']}"
    )
    print(f"{'frames':>6} {'tokens':>6} {'naive_ms':>10} {'ours_ms':>9} {'speedup':>8}  same_path")
    for frames, tokens in ((100, 8), (250, 30), (500, 60), (1500, 120)):
        log_probs = _emissions(frames, 28, seed=frames)
        targets = [2 + (i * 7) % 26 for i in range(tokens)]
        ours = _best_of(lambda: forced_align(log_probs, targets, BLANK), 5)  # noqa: B023
        naive = _best_of(lambda: naive_viterbi(log_probs, targets), 1)  # noqa: B023
        spans = forced_align(log_probs, targets, BLANK)
        path = naive_viterbi(log_probs, targets)
        naive_starts = [path.index(2 * i + 1) for i in range(tokens)]
        same = naive_starts == [span.start for span in spans]
        print(
            f"{frames:>6} {tokens:>6} {naive * 1000:>10.1f} {ours * 1000:>9.2f} "
            f"{naive / ours:>7.0f}x  {same}"
        )
    log_probs = _emissions(500, 28, seed=500)
    targets = [2 + (i * 7) % 26 for i in range(60)]
    ours = _best_of(lambda: forced_align(log_probs, targets, BLANK), 5)
    torch_loop = _best_of(lambda: naive_torch_viterbi(log_probs, targets), 1)
    print(
        f"500 frames x 60 tokens, per-cell torch loop (trellis only): {torch_loop * 1000:.0f} ms;"
        f" ours (trellis + backtrace): {ours * 1000:.1f} ms -> {torch_loop / ours:.0f}x"
    )


if __name__ == "__main__":
    main()
