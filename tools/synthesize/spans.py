"""Energy-based trimming of letter segments to their audible region.

A word event from espeak-ng marks where a letter's segment begins; the segment then runs to the next
letter's event and still includes any pause that follows the letter. The ground-truth span of a
letter is the audible part of its segment: from the first to the last analysis frame whose energy
is within :data:`DEFAULT_THRESHOLD_DB` of the loudest frame of the whole (clean) phrase.

Frames are laid out from each segment's own first sample, so a frame never straddles a segment
boundary: a coarse global frame grid leaked the first milliseconds of the next letter's onset into
the previous segment and stretched its span across the whole pause (measured: +400 ms on 400 ms
pauses). Short isolated blips at a segment edge (resampler ringing next to a boundary) are ignored.
"""

from __future__ import annotations

import numpy as np

#: Frame length and hop (seconds) for the energy envelope; 2.5 ms keeps spans well under the 60 ms
#: tolerance the benchmark uses.
FRAME_S = 0.005
HOP_S = 0.0025
#: A frame is audible when within this many dB of the loudest frame in the phrase.
DEFAULT_THRESHOLD_DB = 40.0
#: Audible runs shorter than this at a segment edge, separated from the rest by at least
#: :data:`MIN_GAP_S` of silence, are treated as leakage from the neighbouring letter.
MAX_BLIP_S = 0.012
MIN_GAP_S = 0.020


def frame_energy_db(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mean-square energy in dB of consecutive frames starting at sample 0 (partial frames kept)."""
    frame = max(1, round(FRAME_S * sr))
    hop = max(1, round(HOP_S * sr))
    if len(audio) == 0:
        return np.zeros(0, dtype=np.float64)
    n = max(1, (len(audio) - frame) // hop + 1) if len(audio) >= frame else 1
    sq = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(n) * hop
    ends = np.minimum(starts + frame, len(audio))
    energy = (sq[ends] - sq[starts]) / np.maximum(ends - starts, 1)
    return 10.0 * np.log10(energy + 1e-12)


def reference_db(audio: np.ndarray, sr: int) -> float:
    """Loudest frame of ``audio`` in dB: the reference for the audibility threshold."""
    energy = frame_energy_db(audio, sr)
    return float(energy.max()) if len(energy) else -120.0


def audible_span(
    audio: np.ndarray,
    sr: int,
    start_s: float,
    end_s: float,
    ref_db: float,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
) -> tuple[float, float] | None:
    """Audible region of ``audio[start_s:end_s]`` in absolute seconds, or None if all silent."""
    i0 = max(0, round(start_s * sr))
    i1 = min(len(audio), round(end_s * sr))
    if i1 <= i0:
        return None
    seg = audio[i0:i1]
    energy = frame_energy_db(seg, sr)
    loud = energy > ref_db - threshold_db
    if not loud.any():
        return None
    frame = max(1, round(FRAME_S * sr))
    hop = max(1, round(HOP_S * sr))
    runs = _runs(loud)
    runs = _drop_edge_blips(runs, hop, frame, sr)
    if not runs:
        return None
    first, last = runs[0][0], runs[-1][1]
    s = i0 + first * hop
    e = min(i1, i0 + last * hop + frame)
    return s / sr, e / sr


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) index pairs of consecutive True values."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    firsts = np.concatenate([[idx[0]], idx[breaks + 1]])
    lasts = np.concatenate([idx[breaks], [idx[-1]]])
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def _drop_edge_blips(
    runs: list[tuple[int, int]], hop: int, frame: int, sr: int
) -> list[tuple[int, int]]:
    def length_s(run: tuple[int, int]) -> float:
        return ((run[1] - run[0]) * hop + frame) / sr

    def gap_s(a: tuple[int, int], b: tuple[int, int]) -> float:
        return (b[0] - a[1]) * hop / sr

    runs = list(runs)
    while (
        len(runs) > 1
        and length_s(runs[-1]) < MAX_BLIP_S
        and gap_s(runs[-2], runs[-1]) >= (MIN_GAP_S)
    ):
        runs.pop()
    while (
        len(runs) > 1 and length_s(runs[0]) < MAX_BLIP_S and gap_s(runs[0], runs[1]) >= (MIN_GAP_S)
    ):
        runs.pop(0)
    return runs


def word_core_intervals(
    words: list[tuple[float, list[tuple[str, float]]]], duration_s: float
) -> list[tuple[float, float]]:
    """Direct-sound interval of each word from espeak-ng's phoneme events.

    ``words`` holds, per word, its event time and its phonemes as ``(name, start_s)``.
    A word's segment runs from its word event to the next one, but that segment also holds the
    pause after the word and, for voices with an ``echo`` setting (f2-f5, m2, ...), the echo tail,
    which an energy trim cannot tell from speech (measured: +70-120 ms on en+f3). The phoneme
    events mark where the synthesizer's own pause phoneme (``_``, ``_:``, ``_!``) begins, which is
    exactly where the letter's direct sound ends.
    """
    out: list[tuple[float, float]] = []
    for i, (start, phonemes) in enumerate(words):
        seg_end = words[i + 1][0] if i + 1 < len(words) else duration_s
        core_start, core_end = start, seg_end
        seen_real = False
        for name, t in phonemes:
            if not name.startswith("_"):
                if not seen_real:
                    core_start = max(start, t)
                    seen_real = True
            elif seen_real:
                core_end = min(seg_end, t)
                break
        out.append((core_start, max(core_start, core_end)))
    return out
