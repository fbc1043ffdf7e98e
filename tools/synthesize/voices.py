"""The espeak-ng voice inventory and its fixed train / held-out split.

A *voice* is an espeak-ng accent (language) combined with a variant (timbre: ``+m1`` ... ``+f5``,
klatt formant-synthesis variants, named variants). The split is by **variant**: every voice whose
variant is in :data:`HELDOUT_VARIANTS` is held out, across all accents, and no training voice uses
one of them. Accents are shared between the two sides on purpose: eight accents are too few to
hold one out and still train on the others' letter-name pronunciations (``z`` is "zee" in en-us
and "zed" in en-gb, ``r`` differs in en-gb-scotland), so a held-out accent would measure an
unseen pronunciation rather than an unseen speaker.

The lists are fixed in code (not drawn at random) so the split cannot drift between the training
run, the sample day and the benchmark. Variants with long robotic echoes or whispering (Demonic,
RicishayMax*, robosoft*, UniRobot, anikaRobot, whisper, whisperf, croak, fast) are left out of
both sides: they are not plausible stand-ins for a reading child.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

VoiceSplit = Literal["train", "heldout", "all"]

#: Accents. ``en-gb`` is addressed as ``en`` by ``espeak_SetVoiceByName``.
LANGUAGES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)

#: Variants used for training (``""`` is the accent's default voice).
TRAIN_VARIANTS: tuple[str, ...] = (
    "",
    "m1",
    "m2",
    "m4",
    "m5",
    "m6",
    "m8",
    "f1",
    "f3",
    "f4",
    "klatt",
    "klatt2",
    "klatt4",
    "klatt5",
    "klatt6",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "AnxiousAndy",
    "Denis",
    "Diogo",
    "Gene2",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Mario",
    "Michael",
    "Mike",
    "Mr serious",
    "Nguyen",
    "Storm",
    "Tweaky",
    "adam",
    "announcer",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "ed",
    "edward",
    "edward2",
    "grandma",
    "grandpa",
    "gustave",
    "iven",
    "iven2",
    "iven4",
    "john",
    "kaukovalta",
    "linda",
    "marcelo",
    "max",
    "michel",
    "miguel",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "shelby",
    "steph",
    "steph3",
    "travis",
    "victor",
    "zac",
)

#: Variants never used for training: the held-out speakers of the benchmark and the sample day.
HELDOUT_VARIANTS: tuple[str, ...] = (
    "m3",
    "m7",
    "f2",
    "f5",
    "klatt3",
    "Annie",
    "Gene",
    "steph2",
    "iven3",
    "anika",
    "david",
)


#: The remaining espeak-ng variants, usable for training when augmenting for generalization
#: (`tools.train data --extra-variants`): robotic, whispered and creaky voices widen the range of
#: timbres the model must see through. ``anikaRobot`` is left out: it is a held-out speaker's
#: voice with an effect on top.
EXTRA_TRAIN_VARIANTS: tuple[str, ...] = (
    "whisper",
    "whisperf",
    "croak",
    "fast",
    "Demonic",
    "UniRobot",
    "RicishayMax",
    "RicishayMax2",
    "RicishayMax3",
    "robosoft",
    "robosoft2",
    "robosoft3",
    "robosoft4",
    "robosoft5",
    "robosoft6",
    "robosoft7",
    "robosoft8",
)


#: espeak-ng's MBROLA voices that read English (``espeak-ng --voices=mb``): espeak-ng's own text
#: analysis, phonemes and prosody, sounded by an MBROLA diphone database instead of its formant
#: synthesizer. The databases are cut from recordings of people, so these voices carry human
#: formant tracks, bursts and glottal sources that no formant-synthesis variant has (issue 17:
#: the model learned espeak-ng's formant timbre, not letters). Four read English natively
#: (``mb-us1`` female US, ``mb-us2`` and ``mb-us3`` male US, ``mb-en1`` male British); the
#: ``-en`` ones are other languages' speakers reading English through espeak-ng's phoneme
#: mapping, which adds speakers (and an accent). None is a speaker of the evaluation stores'
#: synthesizers (``foreign.py``). Debian: ``mbrola`` plus one ``mbrola-<db>`` package each
#: (``contrib`` / ``non-free``); see :data:`MBROLA_PACKAGES`.
MBROLA_VOICES: tuple[str, ...] = (
    "mb-us1",
    "mb-us2",
    "mb-us3",
    "mb-en1",
    "mb-de1-en",
    "mb-de2-en",
    "mb-de3-en",
    "mb-de4-en",
    "mb-de5-en",
    "mb-de6-en",
    "mb-fr1-en",
    "mb-fr4-en",
    "mb-nl2-en",
    "mb-af1-en",
    "mb-gr2-en",
    "mb-hu1-en",
    "mb-pl1-en",
    "mb-ro1-en",
    "mb-sw1-en",
    "mb-sw2-en",
)


def mbrola_database(voice: str) -> str:
    """The MBROLA database an espeak-ng ``mb-`` voice sounds with (``mb-de2-en`` -> ``de2``)."""
    return voice.split("-")[1]


#: The Debian packages :data:`MBROLA_VOICES` need.
MBROLA_PACKAGES: tuple[str, ...] = (
    "mbrola",
    *(f"mbrola-{mbrola_database(v)}" for v in MBROLA_VOICES),
)


#: Where Debian's ``mbrola-<db>`` packages put their databases (and espeak-ng looks for them).
MBROLA_ROOT = Path("/usr/share/mbrola")


def mbrola_voices(root: Path = MBROLA_ROOT) -> tuple[Voice, ...]:
    """Every :data:`MBROLA_VOICES` voice, or a clear error naming the packages that are missing.

    Fails instead of skipping a voice: a training set must not depend on which databases a
    machine happens to have.
    """
    missing = [
        f"mbrola-{mbrola_database(v)}"
        for v in MBROLA_VOICES
        if not (root / mbrola_database(v) / mbrola_database(v)).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            "MBROLA databases missing: "
            + " ".join(missing)
            + " (apt-get install -y "
            + " ".join(MBROLA_PACKAGES)
            + "; Debian contrib and non-free)"
        )
    return tuple(Voice(v) for v in MBROLA_VOICES)


@dataclass(frozen=True, order=True)
class Voice:
    """An accent plus a variant; :attr:`name` is what the ground-truth tables record."""

    language: str
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language

    @property
    def espeak_name(self) -> str:
        """The name ``espeak_SetVoiceByName`` accepts (``en-gb`` is the file ``en``)."""
        lang = "en" if self.language == "en-gb" else self.language
        return f"{lang}+{self.variant}" if self.variant else lang

    @property
    def heldout(self) -> bool:
        return self.variant in HELDOUT_VARIANTS


def voices(split: VoiceSplit) -> tuple[Voice, ...]:
    """All voices on one side of the split, in a fixed order."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"unknown voice split {split!r}")
    variants: tuple[str, ...] = ()
    if split in ("train", "all"):
        variants += TRAIN_VARIANTS
    if split in ("heldout", "all"):
        variants += HELDOUT_VARIANTS
    return tuple(Voice(lang, var) for var in variants for lang in LANGUAGES)


def parse_voice(name: str) -> Voice:
    """Inverse of :attr:`Voice.name`."""
    lang, _, variant = name.partition("+")
    return Voice(lang, variant)


def training_voices(extra_variants: bool = False) -> tuple[Voice, ...]:
    """The training side of the split, plus every other non-held-out variant when asked."""
    base = voices("train")
    if not extra_variants:
        return base
    return base + tuple(Voice(lang, var) for var in EXTRA_TRAIN_VARIANTS for lang in LANGUAGES)
