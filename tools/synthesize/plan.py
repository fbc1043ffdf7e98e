"""What to say and how: random letter phrases with injected reading errors and their labels.

A :class:`PhrasePlan` is pure data, drawn from a seeded :class:`numpy.random.Generator`; rendering
it to audio (``render.py``) is deterministic, so the same seed always gives the same dataset.

Label semantics (the ground-truth contract):

* every expected letter gets one :class:`LetterLabel` with status ``correct``, ``substituted``
  (another letter's name was spoken in its place; ``spoken_letter`` says which) or ``deleted``
  (skipped; no span);
* every extra spoken letter gets a label with status ``inserted``, ``expected_letter`` None and
  ``letter_index`` = the index of the expected letter it was spoken *before* (``len(expected)``
  when it came after the last one);
* ``spoken_index`` is the position of the letter in the spoken sequence (None for deletions), and
  is what ties a label to its rendered time span.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from tools.synthesize.voices import Voice

LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: Letters children (and CTC models) confuse. Letters in these groups are drawn more often and a
#: substitution prefers a letter from the same group.
CONFUSABLE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("b", "d", "p", "q"),
    ("m", "n"),
    ("c", "k", "s"),
    ("e", "i"),
    ("g", "j"),
)
CONFUSABLE = frozenset(ch for group in CONFUSABLE_GROUPS for ch in group)

PhraseKind = Literal["normal", "noise_only", "silent"]
Status = Literal["correct", "substituted", "deleted", "inserted"]
RenderMode = Literal["whole", "spliced"]
NoiseKind = Literal["white", "pink", "brown", "hum"]


@dataclass(frozen=True)
class ErrorRates:
    """Probabilities of each injected reading error (per letter) and phrase kind (per phrase)."""

    substitution: float = 0.07
    deletion: float = 0.05
    insertion: float = 0.04
    noise_only: float = 0.02
    silent: float = 0.02

    @classmethod
    def none(cls) -> ErrorRates:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ProsodyRanges:
    """Ranges (inclusive) the voice parameters are drawn from."""

    rate_wpm: tuple[int, int] = (100, 230)
    pitch: tuple[int, int] = (15, 85)
    pitch_range: tuple[int, int] = (10, 95)
    #: Pause after each letter; drawn log-uniformly so short and long pauses are both common.
    pause_ms: tuple[int, int] = (0, 900)
    #: Per-letter speaking-rate factor in percent (children read unevenly).
    letter_rate_pct: tuple[int, int] = (80, 125)
    lead_s: tuple[float, float] = (0.05, 0.8)
    tail_s: tuple[float, float] = (0.05, 0.8)


@dataclass(frozen=True)
class NoiseSpec:
    """Background noise and level changes applied after synthesis (labels come from clean audio)."""

    kind: NoiseKind | None = None
    snr_db: float = 99.0
    gain_db: float = 0.0
    #: Gain change across the phrase, linear in dB from 0 at the start to this at the end.
    ramp_db: float = 0.0


@dataclass(frozen=True)
class LetterLabel:
    letter_index: int
    expected_letter: str | None
    status: Status
    spoken_letter: str | None
    spoken_index: int | None


@dataclass(frozen=True)
class PhrasePlan:
    expected: tuple[str, ...]
    kind: PhraseKind
    spoken: tuple[str, ...]
    labels: tuple[LetterLabel, ...]
    voice: Voice
    rate: int = 160
    pitch: int = 50
    pitch_range: int = 50
    pauses_ms: tuple[int, ...] = ()
    letter_rate_pct: tuple[int, ...] = ()
    lead_s: float = 0.2
    tail_s: float = 0.2
    render: RenderMode = "whole"
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    #: Seeds the noise generator; part of the plan so rendering stays a pure function.
    noise_seed: int = 0
    #: Length of noise-only and silent phrases.
    empty_duration_s: float = 1.5

    @property
    def expected_text(self) -> str:
        """Catalog form: lower-case letters separated by single spaces."""
        return " ".join(self.expected)


class LetterDeck:
    """Draws letters so every letter appears and confusable ones appear about twice as often.

    A shuffled deck holds each letter once plus each confusable letter once more; it is refilled
    when empty. Drawing from a deck (instead of independent draws) guarantees all 26 letters within
    the first 39 draws, which matters for small sets like the sample day.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._deck: list[str] = []

    def draw(self) -> str:
        if not self._deck:
            cards = list(LETTERS) + sorted(CONFUSABLE)
            self._rng.shuffle(cards)
            self._deck = cards
        return self._deck.pop()

    def draw_sequence(self, length: int) -> tuple[str, ...]:
        """Draw ``length`` letters; sometimes a run of one confusable group, as in real drills."""
        if length >= 2 and self._rng.random() < 0.25:
            group = CONFUSABLE_GROUPS[int(self._rng.integers(len(CONFUSABLE_GROUPS)))]
            return tuple(
                group[int(self._rng.integers(len(group)))]
                if self._rng.random() < 0.7
                else self.draw()
                for _ in range(length)
            )
        return tuple(self.draw() for _ in range(length))


def substitute_for(letter: str, rng: np.random.Generator) -> str:
    """A different letter, from the same confusable group two times in three when there is one."""
    group = next((g for g in CONFUSABLE_GROUPS if letter in g), None)
    if group is not None and rng.random() < 2 / 3:
        options = [c for c in group if c != letter]
    else:
        options = [c for c in LETTERS if c != letter]
    return options[int(rng.integers(len(options)))]


def inject_errors(
    expected: tuple[str, ...], rates: ErrorRates, rng: np.random.Generator
) -> tuple[tuple[str, ...], tuple[LetterLabel, ...]]:
    """Decide what is actually read for ``expected``; returns the spoken letters and labels.

    At least one letter is always spoken in a normal phrase: a phrase with every letter deleted is
    what the noise-only and silent kinds are for.
    """
    spoken: list[str] = []
    labels: list[LetterLabel] = []
    for i, letter in enumerate(expected):
        if rng.random() < rates.insertion:
            extra = LETTERS[int(rng.integers(26))]
            labels.append(LetterLabel(i, None, "inserted", extra, len(spoken)))
            spoken.append(extra)
        roll = rng.random()
        if roll < rates.deletion:
            labels.append(LetterLabel(i, letter, "deleted", None, None))
        elif roll < rates.deletion + rates.substitution:
            other = substitute_for(letter, rng)
            labels.append(LetterLabel(i, letter, "substituted", other, len(spoken)))
            spoken.append(other)
        else:
            labels.append(LetterLabel(i, letter, "correct", letter, len(spoken)))
            spoken.append(letter)
    if rng.random() < rates.insertion:
        extra = LETTERS[int(rng.integers(26))]
        labels.append(LetterLabel(len(expected), None, "inserted", extra, len(spoken)))
        spoken.append(extra)
    if not spoken:
        return correct_reading(expected)
    return tuple(spoken), tuple(labels)


def correct_reading(expected: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[LetterLabel, ...]]:
    labels = tuple(LetterLabel(i, c, "correct", c, i) for i, c in enumerate(expected))
    return tuple(expected), labels


def all_deleted(expected: tuple[str, ...]) -> tuple[LetterLabel, ...]:
    return tuple(LetterLabel(i, c, "deleted", None, None) for i, c in enumerate(expected))


def _uniform_int(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _pause_ms(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    lo, hi = lo_hi
    if rng.random() < 0.15:
        return lo
    # log-uniform over [max(lo, 20), hi]: many short pauses, some long ones
    a = np.log(max(lo, 20))
    b = np.log(max(hi, max(lo, 20) + 1))
    return round(float(np.exp(rng.uniform(a, b))))


def draw_noise(rng: np.random.Generator, noise_prob: float) -> NoiseSpec:
    kind: NoiseKind | None = None
    snr = 99.0
    if rng.random() < noise_prob:
        kind = ("white", "pink", "brown", "hum")[int(rng.integers(4))]
        snr = float(rng.uniform(8.0, 40.0))
    gain = float(rng.uniform(-24.0, 0.0))
    ramp = float(rng.uniform(-8.0, 8.0)) if rng.random() < 0.3 else 0.0
    return NoiseSpec(kind=kind, snr_db=snr, gain_db=gain, ramp_db=ramp)


def draw_phrase(
    rng: np.random.Generator,
    deck: LetterDeck,
    voice: Voice,
    *,
    length: int | None = None,
    length_range: tuple[int, int] = (2, 8),
    rates: ErrorRates | None = None,
    prosody: ProsodyRanges | None = None,
    render: RenderMode = "whole",
    noise_prob: float = 0.3,
) -> PhrasePlan:
    """Draw one phrase: expected letters, kind, what is spoken, prosody, pauses and noise."""
    rates = rates or ErrorRates()
    prosody = prosody or ProsodyRanges()
    n = length if length is not None else _uniform_int(rng, length_range)
    expected = deck.draw_sequence(n)
    roll = rng.random()
    kind: PhraseKind
    if roll < rates.silent:
        kind = "silent"
    elif roll < rates.silent + rates.noise_only:
        kind = "noise_only"
    else:
        kind = "normal"
    if kind == "normal":
        spoken, labels = inject_errors(expected, rates, rng)
    else:
        spoken, labels = (), all_deleted(expected)
    noise = draw_noise(rng, noise_prob)
    if kind == "noise_only" and noise.kind is None:
        noise = replace(noise, kind=("white", "pink", "brown", "hum")[int(rng.integers(4))])
    return PhrasePlan(
        expected=expected,
        kind=kind,
        spoken=spoken,
        labels=labels,
        voice=voice,
        rate=_uniform_int(rng, prosody.rate_wpm),
        pitch=_uniform_int(rng, prosody.pitch),
        pitch_range=_uniform_int(rng, prosody.pitch_range),
        pauses_ms=tuple(_pause_ms(rng, prosody.pause_ms) for _ in spoken),
        letter_rate_pct=tuple(
            100 if rng.random() < 0.5 else _uniform_int(rng, prosody.letter_rate_pct)
            for _ in spoken
        ),
        lead_s=float(rng.uniform(*prosody.lead_s)),
        tail_s=float(rng.uniform(*prosody.tail_s)),
        render=render,
        noise=noise,
        noise_seed=int(rng.integers(2**31)),
        empty_duration_s=float(rng.uniform(0.8, 3.0)),
    )
