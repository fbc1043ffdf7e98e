"""The model's output vocabulary: CTC blank/pad, word separator, and the 26 letters."""

from __future__ import annotations

import string

BLANK = 0
SEPARATOR = 1
#: Exactly this mapping, in this order, is written to ``vocab.json``.
VOCAB: dict[str, int] = {"<pad>": BLANK, "|": SEPARATOR} | {
    c: i + 2 for i, c in enumerate(string.ascii_lowercase)
}
ID_TO_TOKEN: dict[int, str] = {i: t for t, i in VOCAB.items()}
FRAME_S = 0.02
#: Centre of output frame ``t`` is ``FRAME_S * t + FRAME_CENTRE_OFFSET_S`` seconds: the
#: SeamlessM4T feature extractor frames 25 ms windows every 10 ms without centring and stacks
#: pairs, so frame ``t`` covers samples [320 t, 320 t + 560).
FRAME_CENTRE_OFFSET_S = 0.0175


def ctc_target(letters: str) -> list[int]:
    """Token ids for spoken ``letters`` ("bdp" -> b | d | p)."""
    ids: list[int] = []
    for i, c in enumerate(letters):
        if i:
            ids.append(SEPARATOR)
        ids.append(VOCAB[c])
    return ids


def greedy_letters(frame_ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Collapse a best-path frame sequence to letters, with each letter's (first, last) frame.

    Repeats collapse, blanks and separators are dropped; a letter repeated across a blank or a
    separator counts twice (``b _ b`` is "bb").
    """
    out: list[str] = []
    frames: list[tuple[int, int]] = []
    prev = -1
    for t, k in enumerate(frame_ids):
        if k != prev and k > SEPARATOR:
            out.append(ID_TO_TOKEN[k])
            frames.append((t, t))
        elif k == prev and k > SEPARATOR:
            frames[-1] = (frames[-1][0], t)
        prev = k
    return "".join(out), frames
