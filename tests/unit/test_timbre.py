"""Random espeak-ng variants: drawn within bounds, isolated in an overlay, used by training only."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from tests.support.espeak import needs_espeak
from tools.synthesize.timbre import (
    PREFIX,
    SYSTEM_DATA,
    build_overlay,
    random_timbre_voices,
    random_variant,
    variant_names,
)
from tools.synthesize.voices import (
    EXTRA_TRAIN_VARIANTS,
    HELDOUT_VARIANTS,
    LANGUAGES,
    TRAIN_VARIANTS,
    parse_voice,
)
from tools.train.data import PhraseSet, SetSpec, generate_set


def _fields(text: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in text.splitlines()[2:]:
        key, *values = line.split()
        if key == "formant":
            out[f"formant{values[0]}"] = [int(v) for v in values[1:]]
        else:
            out[key] = [int(v) for v in values]
    return out


def test_generated_names_collide_with_no_shipped_variant() -> None:
    names = variant_names(500)
    assert len(set(names)) == 500
    shipped = {*TRAIN_VARIANTS, *HELDOUT_VARIANTS, *EXTRA_TRAIN_VARIANTS}
    assert not shipped & set(names)
    assert all(n.startswith(PREFIX) for n in names)
    voices = random_timbre_voices(3)
    assert len(voices) == 3 * len(LANGUAGES)
    assert not [v for v in voices if v.heldout]


def test_random_variants_stay_in_range_and_never_use_the_held_out_klatt_setting() -> None:
    rng = np.random.default_rng(0)
    klatt_modes: set[int] = set()
    for i in range(400):
        text = random_variant(rng, f"tv{i:04d}")
        assert text.startswith(f"language variant\nname tv{i:04d}\n")
        f = _fields(text)
        low, high = f["pitch"]
        assert 70 <= low <= 230 and 1.2 * low <= high <= 2.35 * low
        assert f["formant0"][0] == 100
        for k in range(1, 9):
            freq, height, width = f[f"formant{k}"]
            assert 70 <= freq <= 135 and 65 <= height <= 145 and 70 <= width <= 170
        assert 55 <= f["voicing"][0] <= 165
        klatt_modes.add(f.get("klatt", [0])[0])
        if "tone" in f:
            freqs = f["tone"][::2]
            assert freqs == sorted(freqs) and len(f["tone"]) == 8
        if "breath" in f:
            assert len(f["breath"]) == 8 and len(f["breathw"]) == 8
    assert 3 not in klatt_modes
    assert klatt_modes == {0, 1, 2, 4, 5, 6}


def test_random_variants_depend_on_the_seed_only() -> None:
    a = [random_variant(np.random.default_rng(5), "tv0000") for _ in range(2)]
    b = random_variant(np.random.default_rng(6), "tv0000")
    assert a[0] == a[1] != b


@needs_espeak
def test_overlay_links_the_system_data_and_adds_only_the_new_variants(tmp_path: Path) -> None:
    root = build_overlay(tmp_path / "ov", 4, seed=1)
    again = build_overlay(tmp_path / "ov", 4, seed=1)  # a resumed data run
    assert again == root
    data = root / "espeak-ng-data"
    variants = data / "voices" / "!v"
    new = sorted(p.name for p in variants.iterdir() if not p.is_symlink())
    assert new == list(variant_names(4))
    linked = {p.name for p in variants.iterdir() if p.is_symlink()}
    assert linked == {p.name for p in (SYSTEM_DATA / "voices" / "!v").iterdir()}
    assert (data / "phontab").resolve() == (SYSTEM_DATA / "phontab").resolve()
    # The system installation is untouched.
    assert not list((SYSTEM_DATA / "voices" / "!v").glob(f"{PREFIX}*"))


@needs_espeak
def test_a_training_set_with_random_timbres_renders_them_and_held_out_sets_never_do(
    tmp_path: Path,
) -> None:
    spec = SetSpec(40, (1, 2), "train", seed=9, chunk_size=20, random_timbres=6)
    heldout = SetSpec(6, (1, 2), "heldout", seed=9, chunk_size=6, random_timbres=6)
    with contextlib.redirect_stdout(io.StringIO()):
        generate_set(tmp_path / "train", spec, workers=2)
        generate_set(tmp_path / "heldout", heldout, workers=1)
    train = PhraseSet(tmp_path / "train")
    variants = {parse_voice(m["voice"]).variant for m in train.meta}
    drawn = {v for v in variants if re.fullmatch(f"{PREFIX}\\d{{4}}", v)}
    assert drawn, "no phrase used a generated variant"
    assert drawn <= set(variant_names(6))
    for i in range(len(train)):
        phrase = train[i]
        if parse_voice(train.meta[i]["voice"]).variant in drawn and phrase.spoken:
            assert len(phrase.spans) == len(phrase.spoken)
            peak = np.abs(phrase.x.astype(np.int32)).max()
            assert peak > 300, "a generated voice rendered silence"
    assert not (tmp_path / "heldout" / "espeak-overlay").exists()
    held = PhraseSet(tmp_path / "heldout")
    assert all(parse_voice(m["voice"]).variant in HELDOUT_VARIANTS for m in held.meta)
