"""The training loop: CTC plus a frame-level loss from the synthesizer's exact letter spans.

Why two losses. CTC alone from scratch sits in the all-blank plateau for hundreds of steps (both
earlier trials did), and once trained it emits each letter as a one-frame spike at an arbitrary
point inside the letter, which makes start/end times from alignment poor. The synthesizer knows
every letter's true span, so each 20 ms frame also gets a target: the letter inside its span,
"blank or separator" between letters, blank before the first and after the last letter. That
frame path is one of the paths CTC accepts for the target ``b | d | p``, so the two losses agree;
the frame loss gives dense gradients from step one (no plateau) and makes the letter posterior
cover the letter, so forced alignment recovers its edges. CTC keeps the model a proper CTC model
(greedy decoding, separator placement).

Training is seeded and resumable: ``ckpt-last.pt`` holds model, optimizer, scheduler, step and
accumulated wall time; batches depend only on (seed, step) (see ``BucketSampler``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.train.data import GAP, IGNORE, Batch, BucketSampler, PhraseSet, collate, crop_edges
from tools.train.metrics import evaluate
from tools.train.model import build_model, output_frames
from tools.train.vocab import BLANK, SEPARATOR


@dataclass
class TrainConfig:
    data: Path
    out: Path
    arch: str = "w2v2"
    size: str = "small"
    steps: int = 22_000
    lr: float = 1e-3
    warmup: int = 500
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    max_frames: int = 4000
    curriculum_steps: int = 1500
    short_fraction: float = 0.2
    frame_loss_weight: float = 2.0
    eval_every: int = 500
    ckpt_every: int = 250
    seed: int = 0
    #: 0 = adaptive (see ThreadTuner); otherwise a fixed torch thread count.
    threads: int = 0
    crop_keep_s: tuple[float, float] = (0.1, 0.4)
    dropout: float = 0.05
    clip: float = 5.0
    log_every: int = 50
    #: Warm start: a save_pretrained directory whose weights replace the fresh initialization.
    init_from: Path | None = None
    #: Blank bias baked into ``init_from`` at export (removed before training, see export.py).
    init_blank_bias: float = 0.0


def losses(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(CTC loss, frame loss) for one batch."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    ctc = F.ctc_loss(
        log_probs.transpose(0, 1),
        batch.targets,
        batch.out_lengths,
        batch.target_lengths,
        blank=BLANK,
        reduction="mean",
        zero_infinity=True,
    )
    tgt = batch.frame_targets
    is_token = tgt >= 0
    is_gap = tgt == GAP
    token_lp = log_probs.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    gap_lp = torch.logsumexp(log_probs[..., [BLANK, SEPARATOR]], dim=-1)
    per_frame = torch.where(is_token, -token_lp, torch.where(is_gap, -gap_lp, 0.0))
    counted = (is_token | is_gap) & (tgt != IGNORE)
    frame = per_frame[counted].mean() if counted.any() else per_frame.sum() * 0.0
    return ctc, frame


class ThreadTuner:
    """Pick 1 or 2 torch threads by measured step time, re-checked every ``period`` steps.

    Why: this machine's two cores are shared with other work. Measured under that load, a
    2-thread step took 4.1 s against 1.2 s single-threaded (OpenMP threads wait at every barrier
    for the descheduled one), while on idle cores 2 threads are ~1.6x faster. Every ``period``
    steps the other setting is tried for ``probe`` steps and kept if it is 10% faster per frame.
    """

    def __init__(self, period: int = 100, probe: int = 8) -> None:
        self.period, self.probe = period, probe
        self.current = 1
        self.times: dict[int, list[float]] = {1: [], 2: []}
        torch.set_num_threads(self.current)

    def threads_for(self, step: int) -> int:
        probing = step % self.period >= self.period - self.probe
        n = (3 - self.current) if probing else self.current
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def record(self, step: int, threads: int, seconds_per_frame: float) -> None:
        self.times[threads].append(seconds_per_frame)
        if step % self.period == self.period - 1:
            other = 3 - self.current
            mine = self.times[self.current][-(self.period - self.probe) :]
            theirs = self.times[other][-self.probe :]
            if mine and theirs and np.median(theirs) < 0.9 * np.median(mine):
                self.current = other
            self.times = {1: [], 2: []}


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        cos = 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * cos

    return f


def _log(out: Path, row: dict) -> None:
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def train(cfg: TrainConfig) -> None:
    tuner = ThreadTuner() if cfg.threads == 0 else None
    if tuner is None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    short = PhraseSet(cfg.data / "train-short")
    long = PhraseSet(cfg.data / "train-long")
    heldout = PhraseSet(cfg.data / "heldout")
    samplers = {
        "short": BucketSampler(short, cfg.max_frames, cfg.seed),
        "long": BucketSampler(long, cfg.max_frames, cfg.seed),
    }
    sets = {"short": short, "long": long}

    model = build_model(cfg.arch, cfg.size, cfg.dropout)
    if cfg.init_from is not None and not (cfg.out / "ckpt-last.pt").exists():
        _warm_start(model, cfg.init_from, cfg.init_blank_bias)
    frames_of = output_frames(model.config)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    step, wall, best = 0, 0.0, math.inf
    ckpt = cfg.out / "ckpt-last.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, wall, best = state["step"], state["wall_s"], state["best_ler"]
        torch.set_rng_state(state["torch_rng"])
        if "numpy_rng" in state:  # SpecAugment draws its masks from numpy's global RNG
            np.random.set_state(state["numpy_rng"])
        print(f"resumed from step {step} ({wall / 3600:.2f} h so far)", flush=True)
    else:
        (cfg.out / "train_config.json").write_text(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
        )
        n_params = sum(p.numel() for p in model.parameters())
        _log(cfg.out, {"event": "start", "params": n_params, "config": str(cfg)})

    model.train()
    t_session = time.time()
    t_log = time.time()
    acc = {"ctc": 0.0, "frame": 0.0, "frames": 0, "n": 0}
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, 99, step])
        source = "short"
        if step >= cfg.curriculum_steps and rng.random() >= cfg.short_fraction:
            source = "long"
        idx = samplers[source].batch(step)
        batch = collate([crop_edges(sets[source][i], rng, cfg.crop_keep_s) for i in idx], frames_of)
        threads = tuner.threads_for(step) if tuner else cfg.threads
        t_step = time.time()
        logits = model(**batch.inputs).logits
        ctc, frame = losses(logits, batch)
        loss = ctc + cfg.frame_loss_weight * frame
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        if tuner:
            tuner.record(step, threads, (time.time() - t_step) / batch.frame_targets.numel())
        step += 1
        acc["ctc"] += float(ctc.detach())
        acc["frame"] += float(frame.detach())
        acc["frames"] += int(batch.frame_targets.numel())
        acc["n"] += 1
        if step % cfg.log_every == 0:
            now = time.time()
            _log(
                cfg.out,
                {
                    "step": step,
                    "ctc": round(acc["ctc"] / acc["n"], 4),
                    "frame": round(acc["frame"] / acc["n"], 4),
                    "lr": round(sched.get_last_lr()[0], 6),
                    "s_per_step": round((now - t_log) / acc["n"], 3),
                    "frames_per_batch": acc["frames"] // acc["n"],
                    "threads": torch.get_num_threads(),
                    "wall_h": round((wall + now - t_session) / 3600, 3),
                },
            )
            t_log = now
            acc = {"ctc": 0.0, "frame": 0.0, "frames": 0, "n": 0}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            t_eval = time.time()
            summary = evaluate(model, heldout).summary()
            ler = summary["letter_error_rate"]
            row = {"event": "eval", "step": step, **summary}
            row["eval_s"] = round(time.time() - t_eval, 1)
            if ler < best:
                best = ler
                model.save_pretrained(str(cfg.out / "best"))
                (cfg.out / "best" / "eval.json").write_text(json.dumps(row, indent=2))
                row["new_best"] = True
            _log(cfg.out, row)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _save(cfg, model, opt, sched, step, wall + time.time() - t_session, best)
    _save(cfg, model, opt, sched, step, wall + time.time() - t_session, best)
    model.save_pretrained(str(cfg.out / "last"))


def _warm_start(model: torch.nn.Module, init_from: Path, blank_bias: float) -> None:
    """Load a trained model's weights into the freshly built one (same size and architecture).

    Why: a from-scratch run of the shipped size takes 3.5 h on two shared cores; fine-tuning the
    shipped model on augmented data reaches a new operating point in a fraction of that. The
    shipped weights carry the export's blank bias, which is taken out again so that training
    sees the model's own prior (the export puts the calibrated bias back).
    """
    from tools.train.export import load_unbiased

    source = load_unbiased(init_from, blank_bias)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"--init-from {init_from} does not match the model size: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _save(
    cfg: TrainConfig,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    wall: float,
    best: float,
) -> None:
    tmp = cfg.out / "ckpt-last.pt.tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "wall_s": wall,
            "best_ler": best,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
        },
        tmp,
    )
    tmp.replace(cfg.out / "ckpt-last.pt")
