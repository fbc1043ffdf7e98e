"""Write synthesized activities as a store: the activity catalog, audio files and ground truth.

Layout under the store root (the catalog data contract of the foundation issue)::

    catalog/activities/activity_date=YYYY-MM-DD/part-0.parquet   one row per phrase
    audio/YYYY-MM-DD/<activity_id>/<phrase_index>.<ext>           one file per phrase, or
    audio/YYYY-MM-DD/<activity_id>/recording.<ext>                one file per activity, phrases
                                                                  cut out with audio_start_s/end_s
    ground_truth/letters.parquet                                  one row per expected letter
                                                                  plus one per inserted letter
    ground_truth/phrases.parquet                                  one row per phrase

Ground-truth times (``true_start_s``/``true_end_s``) are seconds from the start of the phrase's
audio as the pipeline sees it: from the start of the phrase's file, or from ``audio_start_s``
when the phrase is cut out of a longer recording.

Everything (ids, timestamps, audio bytes) is a function of the seed, so regenerating with the same
command reproduces the store byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import soxr

from tools.synthesize.espeak import TARGET_SR
from tools.synthesize.plan import (
    ErrorRates,
    LetterDeck,
    LetterLabel,
    NoiseSpec,
    PhrasePlan,
    RenderMode,
    all_deleted,
    correct_reading,
    draw_phrase,
)
from tools.synthesize.render import Rendered, RenderError, render
from tools.synthesize.voices import Voice, VoiceSplit, voices

AudioFormat = Literal["flac", "wav", "ogg", "mp3"]
PhraseTruthKind = Literal["normal", "noise_only", "silent", "corrupt"]

_SF_FORMAT: dict[str, tuple[str, str]] = {
    "flac": ("FLAC", "PCM_16"),
    "wav": ("WAV", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}

ACTIVITY_SCHEMA = pa.schema(
    [
        ("activity_id", pa.string()),
        ("tenant_id", pa.string()),
        ("student_id", pa.string()),
        ("activity_date", pa.date32()),
        ("phrase_index", pa.int32()),
        ("expected_text", pa.string()),
        ("audio_key", pa.string()),
        ("audio_start_s", pa.float64()),
        ("audio_end_s", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

LETTER_TRUTH_SCHEMA = pa.schema(
    [
        ("activity_id", pa.string()),
        ("phrase_index", pa.int32()),
        ("letter_index", pa.int32()),
        ("expected_letter", pa.string()),
        ("true_status", pa.string()),
        ("spoken_letter", pa.string()),
        ("spoken_index", pa.int32()),
        ("true_start_s", pa.float64()),
        ("true_end_s", pa.float64()),
    ]
)

PHRASE_TRUTH_SCHEMA = pa.schema(
    [
        ("activity_id", pa.string()),
        ("phrase_index", pa.int32()),
        ("activity_date", pa.date32()),
        ("kind", pa.string()),
        ("voice", pa.string()),
        ("speed", pa.int32()),
        ("pitch", pa.int32()),
        ("pitch_range", pa.int32()),
        ("duration_s", pa.float64()),
        ("render", pa.string()),
        ("noise", pa.string()),
        ("snr_db", pa.float64()),
        ("gain_db", pa.float64()),
        ("expected_text", pa.string()),
        ("spoken_text", pa.string()),
        ("audio_key", pa.string()),
        ("audio_format", pa.string()),
    ]
)


@dataclass
class PhraseSpec:
    """A planned phrase plus how its audio is stored."""

    plan: PhrasePlan
    audio_format: AudioFormat = "flac"
    #: Store non-audio bytes under the audio key instead of the rendering (a corrupt upload).
    corrupt: bool = False
    #: Store at this sample rate / channel count (exercises the pipeline's resample and downmix).
    sample_rate: int = TARGET_SR
    channels: int = 1


@dataclass
class ActivitySpec:
    activity_id: str
    tenant_id: str
    student_id: str
    activity_date: dt.date
    created_at: dt.datetime
    voice: Voice
    phrases: list[PhraseSpec] = field(default_factory=list)
    #: Record all phrases in one file, with silence between them, and cut them by offsets.
    single_file: bool = False
    single_file_format: AudioFormat = "flac"


def activity_id_from(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def draw_activity(
    rng: np.random.Generator,
    deck: LetterDeck,
    *,
    date: dt.date,
    tenant_id: str,
    student_id: str,
    voice_pool: Sequence[Voice],
    phrases_range: tuple[int, int] = (4, 6),
    rates: ErrorRates | None = None,
    noise_prob: float = 0.3,
    render_mode: RenderMode | Literal["mixed"] = "whole",
) -> ActivitySpec:
    """One student's activity: one voice, several phrases with varying prosody and errors."""
    voice = voice_pool[int(rng.integers(len(voice_pool)))]
    n = int(rng.integers(phrases_range[0], phrases_range[1] + 1))
    start = dt.datetime(date.year, date.month, date.day, 8, tzinfo=dt.UTC) + dt.timedelta(
        seconds=int(rng.integers(0, 8 * 3600))
    )
    spec = ActivitySpec(
        activity_id=activity_id_from(rng),
        tenant_id=tenant_id,
        student_id=student_id,
        activity_date=date,
        created_at=start,
        voice=voice,
    )
    for _ in range(n):
        mode: RenderMode
        if render_mode == "mixed":
            mode = "whole" if rng.random() < 0.7 else "spliced"
        else:
            mode = render_mode
        plan = draw_phrase(rng, deck, voice, rates=rates, render=mode, noise_prob=noise_prob)
        spec.phrases.append(PhraseSpec(plan=plan))
    return spec


def _encode(
    path: Path, audio: np.ndarray, fmt: AudioFormat, sample_rate: int, channels: int
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio
    if sample_rate != TARGET_SR:
        data = soxr.resample(data, TARGET_SR, sample_rate, quality="HQ").astype(np.float32)
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    container, subtype = _SF_FORMAT[fmt]
    sf.write(str(path), np.clip(data, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    if fmt == "ogg":
        path.write_bytes(_fixed_ogg_serial(path.read_bytes()))


def _ogg_crc(page: bytes) -> int:
    """CRC-32 of an Ogg page (polynomial 0x04C11DB7, not reflected, initial value 0)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _fixed_ogg_serial(data: bytes, serial: int = 0x5EED) -> bytes:
    """Rewrite the random stream serial libvorbis puts in every Ogg page, so equal seeds give
    byte-identical files (the serial is the only nondeterministic part of the encoding)."""
    out = bytearray(data)
    pos = 0
    while pos + 27 <= len(out) and out[pos : pos + 4] == b"OggS":
        n_segments = out[pos + 26]
        body = sum(out[pos + 27 : pos + 27 + n_segments])
        end = pos + 27 + n_segments + body
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos:end])).to_bytes(4, "little")
        pos = end
    return bytes(out)


def _corrupt_bytes(rng: np.random.Generator) -> bytes:
    return b"this upload is not audio\n" + rng.bytes(2048)


Renderer = Callable[[PhrasePlan], Rendered]


def _render_checked(
    plan: PhrasePlan, rng: np.random.Generator, renderer: Renderer = render
) -> tuple[PhrasePlan, Rendered]:
    """Render, redrawing prosody in the rare case espeak-ng merges or drops a letter."""
    for _ in range(5):
        try:
            return plan, renderer(plan)
        except RenderError:
            plan = replace(
                plan,
                pauses_ms=tuple(max(p, 50) for p in plan.pauses_ms),
                letter_rate_pct=tuple(100 for _ in plan.letter_rate_pct),
                rate=int(rng.integers(120, 200)),
            )
    return plan, renderer(plan)


def write_store(
    root: Path, activities: Sequence[ActivitySpec], seed: int, renderer: Renderer = render
) -> dict[str, int]:
    """Render and write ``activities`` under ``root``; returns counts for the caller to print.

    Ground-truth tables are replaced, catalog partitions are replaced per date that appears in
    ``activities`` (other dates already in the store are left alone).
    """
    rng = np.random.default_rng([seed, 0xC0DE])
    root.mkdir(parents=True, exist_ok=True)
    catalog: dict[dt.date, list[dict]] = {}
    letters: list[dict] = []
    phrases: list[dict] = []
    counts = {"activities": 0, "phrases": 0, "letters": 0, "audio_files": 0}
    for act in activities:
        counts["activities"] += 1
        day = act.activity_date.isoformat()
        base = f"audio/{day}/{act.activity_id}"
        rendered: list[tuple[PhraseSpec, PhrasePlan, Rendered]] = []
        for ph in act.phrases:
            plan, out = _render_checked(ph.plan, rng, renderer)
            rendered.append((ph, plan, out))
        offsets: list[tuple[float | None, float | None]] = []
        keys: list[str] = []
        if act.single_file:
            key = f"{base}/recording.{act.single_file_format}"
            pieces: list[np.ndarray] = []
            pos = 0
            for _, _, out in rendered:
                gap = np.zeros(round(float(rng.uniform(0.4, 1.2)) * TARGET_SR), np.float32)
                pieces.append(gap)
                pos += len(gap)
                offsets.append((pos / TARGET_SR, (pos + len(out.audio)) / TARGET_SR))
                keys.append(key)
                pieces.append(out.audio)
                pos += len(out.audio)
            pieces.append(np.zeros(round(0.5 * TARGET_SR), np.float32))
            _encode(root / key, np.concatenate(pieces), act.single_file_format, TARGET_SR, 1)
            counts["audio_files"] += 1
        else:
            for i, (ph, _, out) in enumerate(rendered):
                key = f"{base}/{i}.{ph.audio_format}"
                if ph.corrupt:
                    (root / key).parent.mkdir(parents=True, exist_ok=True)
                    (root / key).write_bytes(_corrupt_bytes(rng))
                else:
                    _encode(root / key, out.audio, ph.audio_format, ph.sample_rate, ph.channels)
                counts["audio_files"] += 1
                offsets.append((None, None))
                keys.append(key)
        for i, ((ph, plan, out), (start, end), key) in enumerate(
            zip(rendered, offsets, keys, strict=True)
        ):
            counts["phrases"] += 1
            catalog.setdefault(act.activity_date, []).append(
                {
                    "activity_id": act.activity_id,
                    "tenant_id": act.tenant_id,
                    "student_id": act.student_id,
                    "activity_date": act.activity_date,
                    "phrase_index": i,
                    "expected_text": plan.expected_text,
                    "audio_key": key,
                    "audio_start_s": start,
                    "audio_end_s": end,
                    "created_at": act.created_at + dt.timedelta(seconds=20 * i),
                }
            )
            kind: PhraseTruthKind = "corrupt" if ph.corrupt else plan.kind
            phrases.append(
                {
                    "activity_id": act.activity_id,
                    "phrase_index": i,
                    "activity_date": act.activity_date,
                    "kind": kind,
                    "voice": plan.voice.name,
                    "speed": plan.rate,
                    "pitch": plan.pitch,
                    "pitch_range": plan.pitch_range,
                    "duration_s": out.duration_s,
                    "render": plan.render,
                    "noise": plan.noise.kind,
                    "snr_db": plan.noise.snr_db if plan.noise.kind else None,
                    "gain_db": plan.noise.gain_db,
                    "expected_text": plan.expected_text,
                    "spoken_text": " ".join(plan.spoken),
                    "audio_key": key,
                    "audio_format": "corrupt"
                    if ph.corrupt
                    else (act.single_file_format if act.single_file else ph.audio_format),
                }
            )
            if ph.corrupt:
                continue  # nothing can be scored; the pipeline must emit an error row instead
            for lab in plan.labels:
                span = out.spans[lab.spoken_index] if lab.spoken_index is not None else None
                counts["letters"] += 1
                letters.append(
                    {
                        "activity_id": act.activity_id,
                        "phrase_index": i,
                        "letter_index": lab.letter_index,
                        "expected_letter": lab.expected_letter,
                        "true_status": lab.status,
                        "spoken_letter": lab.spoken_letter,
                        "spoken_index": lab.spoken_index,
                        "true_start_s": round(span[0], 4) if span else None,
                        "true_end_s": round(span[1], 4) if span else None,
                    }
                )
    for date, rows in catalog.items():
        part = root / "catalog" / "activities" / f"activity_date={date.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=ACTIVITY_SCHEMA)
        pq.write_table(table, part / "part-0.parquet")
    gt = root / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(letters, schema=LETTER_TRUTH_SCHEMA), gt / "letters.parquet"
    )
    pq.write_table(
        pa.Table.from_pylist(phrases, schema=PHRASE_TRUTH_SCHEMA), gt / "phrases.parquet"
    )
    return counts


def generate_dataset(
    root: Path,
    *,
    seed: int,
    start_date: dt.date,
    days: int = 1,
    activities_per_day: int = 20,
    phrases_range: tuple[int, int] = (4, 6),
    tenants: int = 2,
    split: VoiceSplit = "heldout",
    rates: ErrorRates | None = None,
    noise_prob: float = 0.3,
    render_mode: RenderMode | Literal["mixed"] = "whole",
    voice_pool: Sequence[Voice] | None = None,
    renderer: Renderer = render,
) -> dict[str, int]:
    """A labeled evaluation/demo store of ``days`` consecutive activity dates.

    ``voice_pool`` and ``renderer`` replace the espeak-ng voices of ``split`` and their renderer
    (the cross-synthesizer stores of ``foreign.py``); the plans are drawn the same way.
    """
    rng = np.random.default_rng(seed)
    deck = LetterDeck(rng)
    pool = tuple(voice_pool) if voice_pool is not None else voices(split)
    tenant_ids = [f"tenant-{chr(ord('a') + t)}" for t in range(tenants)]
    acts: list[ActivitySpec] = []
    for d in range(days):
        date = start_date + dt.timedelta(days=d)
        for a in range(activities_per_day):
            tenant = tenant_ids[a % tenants]
            acts.append(
                draw_activity(
                    rng,
                    deck,
                    date=date,
                    tenant_id=tenant,
                    student_id=f"{tenant}-student-{int(rng.integers(1, 10_000)):04d}",
                    voice_pool=pool,
                    phrases_range=phrases_range,
                    rates=rates,
                    noise_prob=noise_prob,
                    render_mode=render_mode,
                )
            )
    return write_store(root, acts, seed, renderer)


SAMPLE_DAY = dt.date(2026, 11, 27)


def generate_sample_day(root: Path, *, seed: int = 20261127) -> dict[str, int]:
    """The small store behind ``make demo``: held-out voices, every case the scorer must handle.

    Six activities of 4-6 phrases over two tenants. Activity 1 holds the hand-checkable cases,
    rendered clean at a moderate speed: phrase 0 read correctly, phrase 1 with a substitution,
    phrase 2 with a deletion, phrase 3 with an insertion. Activity 2 has a silent phrase and a
    noise-only phrase, activity 3 a corrupt upload (non-audio bytes named ``.wav``), activity 4 is
    one complete recording cut into phrases by offsets, and the formats vary (FLAC, WAV at
    44.1 kHz stereo, Ogg Vorbis, MP3).
    """
    rng = np.random.default_rng(seed)
    deck = LetterDeck(rng)
    pool = voices("heldout")
    acts: list[ActivitySpec] = []
    for a in range(6):
        tenant = ("tenant-a", "tenant-b")[a % 2]
        acts.append(
            draw_activity(
                rng,
                deck,
                date=SAMPLE_DAY,
                tenant_id=tenant,
                student_id=f"{tenant}-student-{a + 1:04d}",
                voice_pool=pool,
                phrases_range=(4, 6),
                rates=ErrorRates(0.05, 0.05, 0.03, 0.0, 0.0),
                noise_prob=0.2,
            )
        )
    _script_clean_cases(acts[0], rng)
    kinds = acts[1].phrases
    kinds[1].plan = _as_kind(kinds[1].plan, "silent")
    kinds[3].plan = _as_kind(kinds[3].plan, "noise_only")
    acts[2].phrases[2].corrupt = True
    acts[2].phrases[2].audio_format = "wav"
    acts[3].single_file = True
    acts[3].single_file_format = "flac"
    acts[4].phrases[0].audio_format = "wav"
    acts[4].phrases[0].sample_rate = 44_100
    acts[4].phrases[0].channels = 2
    acts[4].phrases[1].audio_format = "ogg"
    acts[5].phrases[0].audio_format = "mp3"
    acts[5].phrases[1].audio_format = "wav"
    return write_store(root, acts, seed)


def _as_kind(plan: PhrasePlan, kind: Literal["silent", "noise_only"]) -> PhrasePlan:
    noise = plan.noise if kind == "silent" else NoiseSpec(kind="pink", gain_db=-10.0)
    return replace(plan, kind=kind, spoken=(), labels=all_deleted(plan.expected), noise=noise)


def _script_clean_cases(act: ActivitySpec, rng: np.random.Generator) -> None:
    """Phrases 0-3 of ``act``: correct, substitution, deletion, insertion; clean and unhurried."""
    scripted: list[tuple[tuple[str, ...], tuple[str, ...], tuple[LetterLabel, ...]]] = []
    exp = ("b", "d", "p", "q")
    scripted.append((exp, *correct_reading(exp)))
    exp = ("m", "a", "t")
    scripted.append(
        (
            exp,
            ("n", "a", "t"),
            (
                LetterLabel(0, "m", "substituted", "n", 0),
                LetterLabel(1, "a", "correct", "a", 1),
                LetterLabel(2, "t", "correct", "t", 2),
            ),
        )
    )
    exp = ("s", "u", "n")
    scripted.append(
        (
            exp,
            ("s", "n"),
            (
                LetterLabel(0, "s", "correct", "s", 0),
                LetterLabel(1, "u", "deleted", None, None),
                LetterLabel(2, "n", "correct", "n", 1),
            ),
        )
    )
    exp = ("g", "o")
    scripted.append(
        (
            exp,
            ("g", "j", "o"),
            (
                LetterLabel(0, "g", "correct", "g", 0),
                LetterLabel(1, None, "inserted", "j", 1),
                LetterLabel(1, "o", "correct", "o", 2),
            ),
        )
    )
    for ph, (expected, spoken, labels) in zip(act.phrases, scripted, strict=False):
        ph.plan = replace(
            ph.plan,
            kind="normal",
            expected=expected,
            spoken=spoken,
            labels=labels,
            rate=150,
            pitch=50,
            pitch_range=50,
            pauses_ms=tuple(int(rng.integers(250, 450)) for _ in spoken),
            letter_rate_pct=tuple(100 for _ in spoken),
            lead_s=0.3,
            tail_s=0.3,
            render="whole",
            noise=NoiseSpec(gain_db=-6.0),
        )


def describe(root: Path) -> str:
    """One JSON line with the store's counts, for logs and the README."""
    letters = pq.read_table(root / "ground_truth" / "letters.parquet")
    phrases = pq.read_table(root / "ground_truth" / "phrases.parquet")
    status = letters.column("true_status").to_pylist()
    kinds = phrases.column("kind").to_pylist()
    return json.dumps(
        {
            "phrases": phrases.num_rows,
            "letters": letters.num_rows,
            "status": {s: status.count(s) for s in sorted(set(status))},
            "kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        }
    )
