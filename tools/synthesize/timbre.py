"""Random espeak-ng voice variants: new timbres derived from espeak-ng, for training only.

Why: a model trained on espeak-ng's ~100 shipped variants learns their few formant layouts and
their one glottal source, and then mishears letters read by any other synthesizer (issue 17:
one letter in three recognized on festival voices). espeak-ng's variant files expose the knobs
that make a timbre: per-formant frequency, height and width, glottal source (``voicing``,
``breath``, ``flutter``, ``roughness``), spectral tilt (``tone``), consonant level and the pitch
range. Drawing them at random gives an unbounded supply of speakers that are still espeak-ng.

The variants live in an *overlay* data directory: a copy of espeak-ng's data tree made of
symbolic links, plus the new files under ``voices/!v``. libespeak-ng reads it when
``ESPEAK_DATA_PATH`` names its parent, so the system installation is never modified.

Nothing here reaches evaluation: the held-out espeak-ng variants, festival and FreeTTS are never
drawn from, and ``klatt 3`` (the held-out ``klatt3`` variant is exactly that setting) is never
used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tools.synthesize.voices import LANGUAGES, Voice

#: Name prefix of the generated variants (``en-us+tv0007``); no shipped variant starts with it.
PREFIX = "tv"
#: Where Debian's libespeak-ng1 keeps its data.
SYSTEM_DATA = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
#: Klatt modes a generated variant may use (0: espeak-ng's own source). 3 is a held-out variant.
KLATT_MODES: tuple[int, ...] = (0, 0, 0, 0, 1, 2, 4, 5, 6)


def variant_names(count: int) -> tuple[str, ...]:
    return tuple(f"{PREFIX}{i:04d}" for i in range(count))


def random_timbre_voices(count: int) -> tuple[Voice, ...]:
    """Every accent with every generated variant (needs :func:`use_overlay` in the process)."""
    return tuple(Voice(lang, name) for name in variant_names(count) for lang in LANGUAGES)


def random_variant(rng: np.random.Generator, name: str) -> str:
    """The text of one variant file; every draw stays within what the shipped variants use."""
    lines = ["language variant", f"name {name}"]
    base = float(rng.uniform(70, 230))
    lines.append(f"pitch {base:.0f} {base * rng.uniform(1.25, 2.3):.0f}")
    # One vocal-tract length for the speaker, then each formant moved on its own: relative
    # formant positions are what differ most between espeak-ng and recorded voices.
    tract = float(rng.uniform(0.86, 1.2))
    for k in range(9):
        freq = 100.0 if k == 0 else 100.0 * tract * rng.uniform(0.9, 1.1)
        height = rng.uniform(65, 145)
        width = rng.uniform(70, 170)
        lines.append(f"formant {k} {freq:.0f} {height:.0f} {width:.0f}")
    klatt = int(rng.choice(KLATT_MODES))
    if klatt:
        lines.append(f"klatt {klatt}")
    lines.append(f"voicing {rng.uniform(55, 165):.0f}")
    lines.append(f"consonants {rng.uniform(60, 125):.0f} {rng.uniform(60, 125):.0f}")
    if rng.random() < 0.6:
        lines.append(f"flutter {int(rng.integers(0, 16))}")
    if rng.random() < 0.35:
        lines.append(f"roughness {int(rng.integers(0, 6))}")
    if rng.random() < 0.35:
        levels = " ".join(str(int(v)) for v in rng.integers(0, 30, size=8))
        lines.append(f"breath {levels}")
        widths = " ".join(str(int(v)) for v in rng.integers(60, 400, size=8))
        lines.append(f"breathw {widths}")
    if rng.random() < 0.5:
        # Spectral tilt: frequency/amplitude pairs (Hz, 0-255), as the shipped variants use.
        freqs = np.sort(rng.choice(np.arange(300, 3600, 100), size=4, replace=False))
        amps = rng.integers(20, 256, size=4)
        lines.append("tone " + " ".join(f"{f} {a}" for f, a in zip(freqs, amps, strict=True)))
    if rng.random() < 0.3:
        lines.append(f"intonation {int(rng.choice((1, 2, 3, 4)))}")
    return "\n".join(lines) + "\n"


def build_overlay(root: Path, count: int, seed: int, system: Path = SYSTEM_DATA) -> Path:
    """Write ``root/espeak-ng-data`` with ``count`` random variants; returns ``root``.

    Idempotent for the same (count, seed): the same files are written again, so a resumed data
    run sees the voices of the interrupted one.
    """
    if not system.is_dir():
        raise FileNotFoundError(f"espeak-ng data not found at {system} (apt-get install espeak-ng)")
    data = root / "espeak-ng-data"
    variants = data / "voices" / "!v"
    variants.mkdir(parents=True, exist_ok=True)
    # Link everything but the two directories on the way down to the variants.
    for source, target, own in (
        (system, data, "voices"),
        (system / "voices", data / "voices", "!v"),
        (system / "voices" / "!v", variants, None),
    ):
        for entry in source.iterdir():
            link = target / entry.name
            if entry.name != own and not (link.is_symlink() or link.exists()):
                link.symlink_to(entry)
    rng = np.random.default_rng([seed, 0x7B1])
    for name in variant_names(count):
        (variants / name).write_text(random_variant(rng, name))
    return root


def use_overlay(root: Path) -> None:
    """Point libespeak-ng at ``root`` (call before the first synthesis in the process)."""
    os.environ["ESPEAK_DATA_PATH"] = str(root.resolve())
