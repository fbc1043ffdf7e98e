import itertools
import time

import numpy as np
import pytest

from asr_assets.core.alignment import (
    EditOp,
    edit_alignment,
    edit_cost_matrix,
    forced_align,
    frame_energy_db,
    min_frames_for,
    widen_spans,
)
from asr_assets.core.errors import PhraseError, ReasonCode
from tests.unit.test_decoding import BLANK, SEP, VOCAB, emissions


@pytest.mark.parametrize(
    ("expected", "recognized", "ops"),
    [
        ("bdp", "bdp", ["match"] * 3),
        ("bdp", "bqp", ["match", "substitute", "match"]),
        ("bdp", "bp", ["match", "delete", "match"]),
        ("bdp", "bdxp", ["match", "match", "insert", "match"]),
        ("bdp", "", ["delete"] * 3),
        ("", "ab", ["insert"] * 2),
        ("mn", "nm", ["substitute", "substitute"]),
    ],
)
def test_edit_alignment(expected: str, recognized: str, ops: list[str]) -> None:
    steps = edit_alignment(list(expected), list(recognized))
    assert [step.op.value for step in steps] == ops
    assert [s.expected_index for s in steps if s.op is not EditOp.INSERT] == list(
        range(len(expected))
    )


def per_cell_edit_alignment(
    expected: list[str], recognized: list[str]
) -> list[tuple[str, int | None, int | None]]:
    """The textbook loop over every cell, with the same tie-breaking: the oracle."""
    n, m = len(expected), len(recognized)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = cost[i - 1][j - 1] + (expected[i - 1] != recognized[j - 1])
            cost[i][j] = min(diagonal, cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    steps: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = expected[i - 1] == recognized[j - 1]
            if cost[i][j] == cost[i - 1][j - 1] + (not same):
                steps.append(("match" if same else "substitute", i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            steps.append(("delete", i - 1, None))
            i -= 1
        else:
            steps.append(("insert", None, j - 1))
            j -= 1
    return steps[::-1]


def test_edit_alignment_matches_the_per_cell_loop_on_random_pairs() -> None:
    # Short and long, either side longer, empty sides, few symbols (many ties), multi-character
    # tokens: the row-vectorized matrix must give the very same steps.
    rng = np.random.default_rng(7)
    alphabets = [list("ab"), list("abcdefghijklmnopqrstuvwxyz"), ["th", "sh", "a", "", "'"]]
    for trial in range(600):
        alphabet = alphabets[trial % len(alphabets)]
        n = int(rng.integers(0, 12))
        m = int(rng.integers(0, 12 if trial % 4 else 200))
        expected = [str(t) for t in rng.choice(alphabet, size=n)]
        recognized = [str(t) for t in rng.choice(alphabet, size=m)]
        steps = edit_alignment(expected, recognized)
        got = [(s.op.value, s.expected_index, s.recognized_index) for s in steps]
        assert got == per_cell_edit_alignment(expected, recognized), (expected, recognized)


def test_edit_cost_matrix_is_the_levenshtein_table() -> None:
    cost = edit_cost_matrix(list("kitten"), list("sitting"))
    assert len(cost) == 7 and {len(row) for row in cost} == {8}
    assert cost[-1][-1] == 3
    assert cost[0] == list(range(8)) and [row[0] for row in cost] == list(range(7))
    swapped = edit_cost_matrix(list("sitting"), list("kitten"))
    assert [list(column) for column in zip(*swapped, strict=True)] == cost
    assert edit_cost_matrix([], []) == [[0]]
    assert edit_cost_matrix(["a"], []) == [[0], [1]]


def test_forced_alignment_finds_known_spans() -> None:
    # b b _ | d d d _ p : three letters at frames [0,2), [4,7), [8,9)
    log_probs = emissions(["b", "b", BLANK, SEP, "d", "d", "d", BLANK, "p"])
    spans = forced_align(log_probs, [VOCAB["b"], VOCAB["d"], VOCAB["p"]], BLANK, [SEP])
    assert [(s.start, s.end) for s in spans] == [(0, 2), (4, 7), (8, 9)]
    assert all(s.score == pytest.approx(0.9, abs=1e-4) for s in spans)


def test_forced_alignment_places_a_missing_letter_and_scores_it_low() -> None:
    # The model heard b and p only; d must still get a span, with low support.
    log_probs = emissions(["b", BLANK, BLANK, BLANK, "p"])
    spans = forced_align(log_probs, [VOCAB["b"], VOCAB["d"], VOCAB["p"]], BLANK)
    assert spans[0].start == 0 and spans[2].end == 5
    assert spans[0].end <= spans[1].start < spans[1].end <= spans[2].start
    assert spans[1].score < 0.1 < 0.8 < spans[0].score


def test_repeated_letters_need_a_separating_frame() -> None:
    targets = [VOCAB["b"], VOCAB["b"]]
    assert min_frames_for(targets) == 3
    with pytest.raises(PhraseError) as raised:
        forced_align(emissions(["b", "b"]), targets, BLANK)
    assert raised.value.reason is ReasonCode.AUDIO_TOO_SHORT_FOR_SEQUENCE
    spans = forced_align(emissions(["b", BLANK, "b"]), targets, BLANK)
    assert [(s.start, s.end) for s in spans] == [(0, 1), (2, 3)]


def test_too_few_frames_is_a_reasoned_error() -> None:
    with pytest.raises(PhraseError) as raised:
        forced_align(emissions(["a", "b"]), [VOCAB["a"], VOCAB["b"], VOCAB["c"]], BLANK)
    assert raised.value.reason is ReasonCode.AUDIO_TOO_SHORT_FOR_SEQUENCE


def test_forced_alignment_matches_brute_force_on_random_emissions() -> None:
    rng = np.random.default_rng(7)
    targets = [VOCAB["a"], VOCAB["b"], VOCAB["a"]]
    logits = rng.standard_normal((7, len(VOCAB))).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    spans = forced_align(log_probs, targets, BLANK)

    # Enumerate every valid CTC path of 7 frames for "a b a" and keep the best.
    import itertools

    best_score, best_path = -np.inf, None
    for path in itertools.product([BLANK, *set(targets)], repeat=7):
        collapsed = [k for k, _ in itertools.groupby(path) if k != BLANK]
        if collapsed != targets:
            continue
        score = sum(log_probs[t, k] for t, k in enumerate(path))
        if score > best_score:
            best_score, best_path = score, path
    assert best_path is not None
    runs, index, previous = [], -1, BLANK
    for t, k in enumerate(best_path):
        if k != BLANK and (k != previous):
            index += 1
            runs.append([t, t + 1])
        elif k != BLANK:
            runs[index][1] = t + 1
        previous = k
    assert [(s.start, s.end) for s in spans] == [tuple(r) for r in runs]


def test_forced_alignment_is_vectorised() -> None:
    """Correctness at the size the guide names (500 frames x 60 letters); timing is a sanity bound."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((500, len(VOCAB))).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = [VOCAB[c] for c in (("abcdefghijklmnopqrstuvwxyz" * 3)[:60])]
    started = time.perf_counter()
    spans = forced_align(log_probs, targets, BLANK)
    elapsed = time.perf_counter() - started
    assert len(spans) == 60
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert elapsed < 1.4  # the naive loop's time; ours is ~100x under it (see bench/)


def test_widen_spans_covers_pauses_up_to_midpoints_then_trims_silence() -> None:
    from asr_assets.core.alignment import TokenSpan

    spans = [TokenSpan(2, 3, 4, 0.9), TokenSpan(3, 13, 14, 0.9)]
    assert widen_spans(spans, 20) == [(0, 8), (8, 20)]
    energy = np.full(20, -80.0, dtype=np.float32)
    energy[2:6] = -20.0
    energy[12:16] = -20.0
    assert widen_spans(spans, 20, energy) == [(2, 6), (12, 16)]


def test_frame_energy_tracks_loudness() -> None:
    samples = np.concatenate([np.zeros(1600), 0.5 * np.ones(1600)]).astype(np.float32)
    energy = frame_energy_db(samples, 10)
    assert energy[:5].max() < -90 and energy[5:].min() > -10


def test_neighbours_split_at_the_quietest_frame_between_them() -> None:
    from asr_assets.core.alignment import TokenSpan

    # Letter peaks at frames 3 and 7; the pause between them is at frame 6, not the midpoint 5.
    energy = np.full(12, -20.0, dtype=np.float32)
    energy[6] = -70.0
    energy[10:] = -75.0
    spans = [TokenSpan(2, 3, 4, 0.9), TokenSpan(3, 7, 8, 0.9)]
    assert widen_spans(spans, 12, energy) == [(0, 6), (7, 10)]


def test_noise_floor_raises_the_silence_threshold() -> None:
    from asr_assets.core.alignment import TokenSpan

    rng = np.random.default_rng(1)
    energy = (-40.0 + rng.standard_normal(30)).astype(np.float32)  # a noisy room
    energy[10:15] = -10.0  # the spoken letter
    (span,) = widen_spans([TokenSpan(2, 12, 13, 0.9)], 30, energy)
    assert span == (10, 15)


def test_frame_energy_on_the_model_stride() -> None:
    samples = np.zeros(16000, dtype=np.float32)
    samples[320 * 10 : 320 * 12] = 0.5
    energy = frame_energy_db(samples, 49, stride_samples=320)
    assert [i for i, e in enumerate(energy) if e > -20] == [10, 11]


def _running_sum_energy_db(samples: np.ndarray, num_frames: int, stride: int) -> np.ndarray:
    """The textbook formula: per-frame mean square from a float64 running sum."""
    edges = np.minimum(np.arange(num_frames + 1) * stride, samples.size)
    squares = np.concatenate(([0.0], np.cumsum(np.square(samples, dtype=np.float64))))
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    energy = (squares[edges[1:]] - squares[edges[:-1]]) / counts
    return (10.0 * np.log10(energy + 1e-10)).astype(np.float32)


def test_frame_energy_on_the_stride_matches_the_running_sum_on_random_clips() -> None:
    """Clips ending inside a frame, frames past the end, clips longer than the frames."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        stride = int(rng.choice([160, 320, 333]))
        size = int(rng.integers(1, 40 * stride))
        gain = float(rng.choice([1e-4, 0.05, 0.9]))
        samples = (gain * rng.standard_normal(size)).astype(np.float32)
        samples[: int(rng.integers(0, size))] *= float(rng.choice([0.0, 1.0]))  # silent lead-in
        frames = max(1, size // stride + int(rng.integers(-3, 4)))
        got = frame_energy_db(samples, frames, stride_samples=stride)
        want = _running_sum_energy_db(samples, frames, stride)
        assert got.shape == want.shape == (frames,)
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_tenth_percentile_is_numpys_exactly() -> None:
    from asr_assets.core.alignment import _tenth_percentile

    rng = np.random.default_rng(3)
    for size in [*range(1, 60), 77, 500, 1001] * 5:
        values = (rng.standard_normal(size) * 30 - 50).astype(np.float32)
        values[rng.integers(0, size, size // 3)] = -100.0  # ties, as silent frames give
        assert _tenth_percentile(values) == float(np.percentile(values, 10))


def test_span_mode_auto_keeps_covering_spans_and_widens_spikes() -> None:
    from asr_assets.core.alignment import SpanMode, TokenSpan, letter_spans

    energy = np.full(40, -80.0, dtype=np.float32)
    energy[2:12] = -20.0
    energy[20:30] = -20.0
    # A model whose posteriors cover each letter: the aligned frames are the answer, even where
    # a quiet onset lies outside them (energy would move the start to frame 2).
    covering = [TokenSpan(2, 4, 12, 0.9), TokenSpan(3, 20, 30, 0.9)]
    assert letter_spans(covering, 40, energy) == [(4, 12), (20, 30)]
    assert letter_spans(covering, 40, energy, SpanMode.ENERGY) == [(2, 12), (20, 30)]
    # A spiky model (one frame per letter): auto widens to the voiced region.
    spiky = [TokenSpan(2, 6, 7, 0.9), TokenSpan(3, 24, 25, 0.9)]
    assert letter_spans(spiky, 40, energy) == [(2, 12), (20, 30)]
    assert letter_spans(spiky, 40, energy, SpanMode.ALIGNED) == [(6, 7), (24, 25)]
    assert letter_spans([], 40, energy) == []
