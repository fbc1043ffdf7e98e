"""Training data: pre-synthesized phrases on disk, and batching over them.

Why pre-generate: espeak-ng renders ~500x real time, but the two CPU cores are the training
budget, so every phrase is rendered once, here, not once per epoch.

A *set* is a directory of chunks: ``chunk-00007.npy`` (the samples of all phrases of the chunk,
int16 at 16 kHz, concatenated; or, for ``store="features"``, float16 log-mel features of the
Wav2Vec2-BERT trial) and ``chunk-00007.jsonl`` (one line per phrase: offset and length, spoken
letters, true spans, voice, kind). Each chunk is generated in its own fresh worker process from
seed ``[seed, chunk]``, so a set is reproducible whatever the worker count (libespeak-ng carries
state between calls within a process).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from tools.synthesize.plan import ErrorRates, LetterDeck, ProsodyRanges, draw_phrase
from tools.synthesize.render import RenderError, render
from tools.synthesize.timbre import build_overlay, random_timbre_voices, use_overlay
from tools.synthesize.voices import VoiceSplit, mbrola_voices, training_voices, voices
from tools.train.augment import AugmentConfig, augment
from tools.train.vocab import BLANK, FRAME_CENTRE_OFFSET_S, FRAME_S, VOCAB, ctc_target

SR = 16_000
#: Input samples per output frame (20 ms) for both architectures.
SAMPLES_PER_FRAME = 320
FEATURE_DIM = 160
#: Frames within this distance of a span edge get no frame-level target (edges are ambiguous at
#: 20 ms resolution).
EDGE_GUARD_S = 0.01
#: Frame-level target for frames between two letters: "blank or separator" (see ``losses``).
GAP = -2
IGNORE = -100

Store = Literal["audio", "features"]


@dataclass(frozen=True)
class SetSpec:
    """What to synthesize for one training or evaluation set."""

    n_phrases: int
    length_range: tuple[int, int]
    split: VoiceSplit
    seed: int
    whole_fraction: float = 0.8
    noise_prob: float = 0.35
    chunk_size: int = 500
    store: Store = "audio"
    #: Training wants empty phrases too (so silence maps to blanks); errors only vary sequences.
    rates: ErrorRates = field(default_factory=lambda: ErrorRates(0.07, 0.05, 0.04, 0.02, 0.02))
    #: Augmentation families (``augment.py``) applied after rendering; empty: none.
    augment: tuple[str, ...] = ()
    #: Also draw from the robotic/whispered espeak-ng variants (training sets only).
    extra_variants: bool = False
    #: Apply every family in ``augment`` to every phrase (the robustness sets), not at its
    #: training probability.
    augment_always: bool = False
    #: Random espeak-ng variants (``tools/synthesize/timbre.py``) added to the training voices;
    #: 0: none. Their overlay data directory is written beside the set and drawn from the set's
    #: seed, so two sets' ``tv0000`` are different speakers.
    random_timbres: int = 0
    #: Share of phrases read by espeak-ng's MBROLA voices (``voices.MBROLA_VOICES``: human
    #: diphone databases; training sets only); 0: none. They are always spliced from single
    #: letters: with an MBROLA voice espeak-ng reports one word event per utterance, so a
    #: whole phrase's letters cannot be told apart.
    mbrola_fraction: float = 0.0


def _generate_chunk(args: tuple[Path, SetSpec, int]) -> int:
    out_dir, spec, chunk = args
    rng = np.random.default_rng([spec.seed, chunk])
    deck = LetterDeck(rng)
    if spec.extra_variants and spec.split == "train":
        pool = training_voices(extra_variants=True)
    else:
        pool = voices(spec.split)
    if spec.random_timbres and spec.split == "train":
        use_overlay(out_dir / "espeak-overlay")
        pool = pool + random_timbre_voices(spec.random_timbres)
    mbrola_pool = mbrola_voices() if spec.mbrola_fraction and spec.split == "train" else ()
    # A separate stream, so the plans (and the un-augmented audio) do not depend on `augment`.
    aug_rng = np.random.default_rng([spec.seed, chunk, 0xA06])
    aug_config = None
    if spec.augment:
        aug_config = AugmentConfig(families=spec.augment)
        if spec.augment_always:
            aug_config = AugmentConfig(
                families=spec.augment, probability=dict.fromkeys(spec.augment, 1.0)
            )
    recent: list[np.ndarray] = []
    fe = None
    if spec.store == "features":
        from tools.train.model import build_log_mel_extractor

        fe = build_log_mel_extractor()
    n = min(spec.chunk_size, spec.n_phrases - chunk * spec.chunk_size)
    arrays: list[np.ndarray] = []
    meta: list[dict] = []
    offset = 0
    prosody = ProsodyRanges()
    while len(meta) < n:
        voice = pool[int(rng.integers(len(pool)))]
        mode = "whole" if rng.random() < spec.whole_fraction else "spliced"
        # Drawn only when asked for, so sets without MBROLA voices keep their random stream.
        if mbrola_pool and rng.random() < spec.mbrola_fraction:
            voice, mode = mbrola_pool[int(rng.integers(len(mbrola_pool)))], "spliced"
        plan = draw_phrase(
            rng,
            deck,
            voice,
            length_range=spec.length_range,
            rates=spec.rates,
            prosody=prosody,
            render=mode,
            noise_prob=spec.noise_prob,
        )
        try:
            out = render(plan)
        except RenderError:
            continue  # rare: espeak-ng merged two letters; draw another phrase
        audio, spans, applied = out.audio, list(out.spans), []
        if aug_config is not None:
            audio, spans, applied = augment(audio, spans, aug_rng, aug_config, recent)
            if plan.kind == "normal":
                recent = [*recent[-7:], out.audio]  # babble sources: other phrases' speech
        out = replace(out, audio=audio, spans=tuple(spans))
        if fe is not None:
            x = fe(out.audio, sampling_rate=SR, return_tensors="np")["input_features"][0]
            x = x.astype(np.float16)
        else:
            x = np.round(np.clip(out.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        arrays.append(x)
        meta.append(
            {
                "offset": offset,
                "length": int(x.shape[0]),
                "spoken": "".join(plan.spoken),
                "spans": [[round(s, 4), round(e, 4)] for s, e in out.spans],
                "kind": plan.kind,
                "voice": plan.voice.name,
                "render": plan.render,
                "noise": plan.noise.kind,
                "duration_s": round(out.duration_s, 4),
                "augment": applied,
            }
        )
        offset += int(x.shape[0])
    np.save(out_dir / f"chunk-{chunk:05d}.npy", np.concatenate(arrays))
    with (out_dir / f"chunk-{chunk:05d}.jsonl").open("w") as fh:
        for row in meta:
            fh.write(json.dumps(row) + "\n")
    return n


def generate_set(out_dir: Path, spec: SetSpec, workers: int = 2) -> None:
    """Synthesize ``spec`` into ``out_dir``; chunks already present are kept (resumable)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.json").write_text(
        json.dumps(
            {
                "n_phrases": spec.n_phrases,
                "length_range": spec.length_range,
                "split": spec.split,
                "seed": spec.seed,
                "whole_fraction": spec.whole_fraction,
                "noise_prob": spec.noise_prob,
                "chunk_size": spec.chunk_size,
                "store": spec.store,
                "rates": spec.rates.__dict__,
                "augment": list(spec.augment),
                "extra_variants": spec.extra_variants,
                "augment_always": spec.augment_always,
                "random_timbres": spec.random_timbres,
                "mbrola_fraction": spec.mbrola_fraction,
            },
            indent=2,
        )
    )
    if spec.random_timbres and spec.split == "train":
        build_overlay(out_dir / "espeak-overlay", spec.random_timbres, seed=spec.seed)
    n_chunks = -(-spec.n_phrases // spec.chunk_size)
    todo = [
        (out_dir, spec, c)
        for c in range(n_chunks)
        if not (out_dir / f"chunk-{c:05d}.jsonl").exists()
    ]
    if not todo:
        return
    # spawn: libespeak-ng keeps state across synthesis calls, so a forked worker would inherit
    # whatever the caller synthesized before (a test session, a notebook) and render other
    # phrases for the same seed. maxtasksperchild=1: a fresh process per chunk.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        for done, _ in enumerate(pool.imap_unordered(_generate_chunk, todo), start=1):
            print(f"{out_dir.name}: {done}/{len(todo)} chunks", flush=True)


@dataclass
class Phrase:
    #: int16 samples (audio sets) or float32 (frames, 160) features (feature sets)
    x: np.ndarray
    spoken: str
    spans: list[tuple[float, float]]
    voice: str
    kind: str


class PhraseSet:
    """All phrases of one set, memory-mapped; indexable, with per-phrase letter counts/lengths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        spec = json.loads((root / "spec.json").read_text())
        self.store: Store = spec.get("store", "features")
        self._arrays: list[np.ndarray] = []
        self.meta: list[dict] = []
        self._where: list[tuple[int, int, int]] = []
        for path in sorted(root.glob("chunk-*.jsonl")):
            arr = np.load(path.with_suffix(".npy"), mmap_mode="r")
            k = len(self._arrays)
            self._arrays.append(arr)
            for line in path.read_text().splitlines():
                row = json.loads(line)
                length = row.get("length", row.get("frames"))
                self.meta.append(row)
                self._where.append((k, row["offset"], length))
        if not self.meta:
            raise FileNotFoundError(f"no chunks under {root}")
        lengths = np.array([w[2] for w in self._where])
        #: output frames per phrase (what batching budgets and padding cost)
        self.frames = lengths // SAMPLES_PER_FRAME if self.store == "audio" else lengths
        self.n_letters = np.array([len(m["spoken"]) for m in self.meta])

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> Phrase:
        k, off, n = self._where[i]
        m = self.meta[i]
        raw = self._arrays[k][off : off + n]
        return Phrase(
            x=np.array(raw) if self.store == "audio" else np.asarray(raw, dtype=np.float32),
            spoken=m["spoken"],
            spans=[(s, e) for s, e in m["spans"]],
            voice=m["voice"],
            kind=m["kind"],
        )


class BucketSampler:
    """Stateless batch sampler: batch ``step`` depends only on (seed, step), so resuming from a
    checkpoint replays exactly the batches an uninterrupted run would have seen.

    Batches hold phrases with the same number of spoken letters and similar length, up to
    ``max_frames`` padded output frames.
    """

    def __init__(self, data: PhraseSet, max_frames: int, seed: int, max_batch: int = 48) -> None:
        self.data = data
        self.max_frames = max_frames
        self.seed = seed
        self.max_batch = max_batch
        self.buckets: dict[int, np.ndarray] = {}
        for n in np.unique(data.n_letters):
            idx = np.flatnonzero(data.n_letters == n)
            self.buckets[int(n)] = idx[np.argsort(data.frames[idx], kind="stable")]
        sizes = np.array([len(v) for v in self.buckets.values()], dtype=np.float64)
        self.keys = list(self.buckets)
        self.weights = sizes / sizes.sum()

    def batch(self, step: int, stream: int = 0) -> list[int]:
        rng = np.random.default_rng([self.seed, stream, step])
        key = self.keys[int(rng.choice(len(self.keys), p=self.weights))]
        idx = self.buckets[key]
        anchor = int(rng.integers(len(idx)))
        # grow a window of similar-length phrases around the anchor within the frame budget
        lo = hi = anchor
        longest = int(self.data.frames[idx[anchor]])
        while hi - lo + 1 < self.max_batch:
            grow_up = hi + 1 < len(idx) and (lo == 0 or rng.random() < 0.5)
            cand = hi + 1 if grow_up else lo - 1
            if cand < 0 or cand >= len(idx):
                break
            new_longest = max(longest, int(self.data.frames[idx[cand]]))
            if new_longest * (hi - lo + 2) > self.max_frames:
                break
            longest = new_longest
            if grow_up:
                hi = cand
            else:
                lo = cand
        return [int(i) for i in idx[lo : hi + 1]]


def frame_targets(spans: list[tuple[float, float]], letters: str, n_frames: int) -> np.ndarray:
    """Per-frame targets derived from the true spans (see ``loop.losses``).

    Letter id inside a letter's span, :data:`GAP` between two letters, blank before the first
    and after the last, :data:`IGNORE` within :data:`EDGE_GUARD_S` of any span edge.
    """
    centres = FRAME_S * np.arange(n_frames) + FRAME_CENTRE_OFFSET_S
    target = np.full(n_frames, BLANK, dtype=np.int64)
    if not letters:
        return target
    first, last = spans[0][0], spans[-1][1]
    target[(centres > first) & (centres < last)] = GAP
    for (s, e), c in zip(spans, letters, strict=True):
        target[(centres >= s) & (centres <= e)] = VOCAB[c]
    for s, e in spans:
        for edge in (s, e):
            target[np.abs(centres - edge) < EDGE_GUARD_S] = IGNORE
    return target


def crop_edges(phrase: Phrase, rng: np.random.Generator, keep_s: tuple[float, float]) -> Phrase:
    """Shorten the silence before the first and after the last letter to ``keep_s`` (random).

    Rendered phrases carry up to ~1.5 s of lead/tail silence; it teaches little beyond "silence
    is blank" and costs ~20% of the frames of a step. Crops fall on frame boundaries so span
    times shift by whole frames.
    """
    unit = 1 if phrase.x.ndim == 2 else SAMPLES_PER_FRAME  # features: frames; audio: samples
    n_frames = phrase.x.shape[0] // unit
    if phrase.spans:
        first, last = phrase.spans[0][0], phrase.spans[-1][1]
        start_s = max(0.0, first - rng.uniform(*keep_s))
        end_s = last + rng.uniform(*keep_s)
    else:
        start_s, end_s = 0.0, rng.uniform(0.4, 1.5)
    a = max(0, int(start_s / FRAME_S))
    b = min(n_frames + 1, max(a + 1, int(np.ceil(end_s / FRAME_S))))
    shift = a * FRAME_S
    return Phrase(
        x=phrase.x[a * unit : b * unit],
        spoken=phrase.spoken,
        spans=[(s - shift, e - shift) for s, e in phrase.spans],
        voice=phrase.voice,
        kind=phrase.kind,
    )


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # model keyword arguments (input_values or input_features)
    out_lengths: torch.Tensor  # (B,) real output frames per phrase
    targets: torch.Tensor  # (sum of target lengths,)
    target_lengths: torch.Tensor  # (B,)
    frame_targets: torch.Tensor  # (B, T_out) with IGNORE on padding
    spoken: list[str]
    spans: list[list[tuple[float, float]]]


def normalize(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the real samples (Wav2Vec2FeatureExtractor's do_normalize)."""
    x = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


def collate(phrases: list[Phrase], out_frames: Callable[[int], int]) -> Batch:
    """Pad a batch; ``out_frames(n)`` maps an input length to the model's output frame count."""
    audio = phrases[0].x.ndim == 1
    n_in = max(p.x.shape[0] for p in phrases)
    if audio:
        x = np.zeros((len(phrases), n_in), dtype=np.float32)
    else:
        x = np.zeros((len(phrases), n_in, FEATURE_DIM), dtype=np.float32)
    mask = np.zeros((len(phrases), n_in), dtype=np.int64)
    lengths = [out_frames(p.x.shape[0]) for p in phrases]
    frames = np.full((len(phrases), max(lengths)), IGNORE, dtype=np.int64)
    targets: list[int] = []
    target_lengths: list[int] = []
    for i, p in enumerate(phrases):
        n = p.x.shape[0]
        x[i, :n] = normalize(p.x) if audio else p.x
        mask[i, :n] = 1
        frames[i, : lengths[i]] = frame_targets(p.spans, p.spoken, lengths[i])
        ids = ctc_target(p.spoken)
        targets.extend(ids)
        target_lengths.append(len(ids))
    key = "input_values" if audio else "input_features"
    return Batch(
        inputs={key: torch.from_numpy(x), "attention_mask": torch.from_numpy(mask)},
        out_lengths=torch.tensor(lengths, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        target_lengths=torch.tensor(target_lengths, dtype=torch.long),
        frame_targets=torch.from_numpy(frames),
        spoken=[p.spoken for p in phrases],
        spans=[p.spans for p in phrases],
    )


def iterate_in_batches(
    data: PhraseSet, max_frames: int, out_frames: Callable[[int], int]
) -> Iterator[tuple[list[int], Batch]]:
    """Deterministic pass over a whole set (evaluation), length-sorted to limit padding."""
    order = np.argsort(data.frames, kind="stable")
    batch: list[int] = []
    for i in order:
        if batch and data.frames[i] * (len(batch) + 1) > max_frames:
            yield batch, collate([data[j] for j in batch], out_frames)
            batch = []
        batch.append(int(i))
    if batch:
        yield batch, collate([data[j] for j in batch], out_frames)
