"""Command line for training the demo letter model.

The run that produced ``models/demo-letters`` (details in its MODEL_CARD.md)::

    python -m tools.train data                     # .train/data-audio, ~10 min on 2 processes
    nohup nice -n 10 python -m tools.train fit >> .train/train.log 2>&1 &
    #   resumable: rerunning the same line continues from .train/run-w2v2/ckpt-last.pt
    python -m tools.train calibrate --model .train/run-w2v2/best       # blank bias, train voices
    python -m tools.train eval --model .train/run-w2v2/best            # held-out voices
    python -m tools.train export --model .train/run-w2v2/best --card .train/MODEL_CARD.md \
        --blank-bias <best from calibrate>
    python -m tools.train benchmark --model models/demo-letters --store <labeled store>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.train.data import PhraseSet, SetSpec, generate_set
from tools.train.model import ARCHITECTURES, SIZES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.train", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="pre-synthesize training and held-out features")
    d.add_argument("--out", type=Path, default=Path(".train/data-audio"))
    d.add_argument("--short", type=int, default=12_000, help="phrases of 1-3 letters (curriculum)")
    d.add_argument("--long", type=int, default=40_000, help="phrases of 2-8 letters")
    d.add_argument("--heldout", type=int, default=600, help="held-out-voice phrases of 2-8 letters")
    d.add_argument(
        "--trainvoices-eval",
        type=int,
        default=300,
        help="training-voice phrases of 2-8 letters, never trained on (what `calibrate` tunes on)",
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument(
        "--augment",
        default="",
        help="augmentation families for the training sets, comma-separated, or 'all' "
        "(tools/train/augment.py); the held-out set is never augmented",
    )
    d.add_argument(
        "--extra-variants",
        action="store_true",
        help="train also on the robotic/whispered espeak-ng variants",
    )
    d.add_argument(
        "--random-timbres",
        type=int,
        default=0,
        help="also train on this many random espeak-ng variants (tools/synthesize/timbre.py)",
    )
    d.add_argument(
        "--mbrola",
        type=float,
        default=0.0,
        help="share of training phrases read by espeak-ng's MBROLA voices (human diphones; "
        "Debian mbrola packages, tools/synthesize/voices.py)",
    )
    d.add_argument(
        "--store",
        choices=("audio", "features"),
        default="audio",
        help="int16 audio (Wav2Vec2) or log-mel features (the Wav2Vec2-BERT trial)",
    )

    f = sub.add_parser("fit", help="train (resumes from OUT/ckpt-last.pt when present)")
    f.add_argument("--data", type=Path, default=Path(".train/data-audio"))
    f.add_argument("--out", type=Path, default=Path(".train/run-w2v2"))
    f.add_argument("--arch", choices=ARCHITECTURES, default="w2v2")
    f.add_argument("--size", choices=tuple(SIZES), default="small")
    f.add_argument("--steps", type=int, default=22_000)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--warmup", type=int, default=500)
    f.add_argument("--max-frames", type=int, default=4000, help="padded frames per batch")
    f.add_argument("--curriculum-steps", type=int, default=1500)
    f.add_argument("--frame-loss-weight", type=float, default=2.0)
    f.add_argument("--eval-every", type=int, default=500)
    f.add_argument("--ckpt-every", type=int, default=250)
    f.add_argument("--log-every", type=int, default=50)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--threads", type=int, default=0, help="torch threads; 0 = adaptive 1/2 (see ThreadTuner)"
    )
    f.add_argument("--dropout", type=float, default=0.05)
    f.add_argument(
        "--init-from", type=Path, help="warm start from this save_pretrained directory (same size)"
    )
    f.add_argument(
        "--init-blank-bias",
        type=float,
        default=0.0,
        help="the blank bias baked into --init-from at export; removed before training",
    )

    e = sub.add_parser("eval", help="held-out metrics of a saved model directory")
    e.add_argument("--data", type=Path, default=Path(".train/data-audio"))
    e.add_argument("--set", default="heldout")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--threads", type=int, default=2)

    b = sub.add_parser("benchmark", help="model-card figures on a labeled store, from audio")
    b.add_argument("--model", type=Path, required=True)
    b.add_argument("--store", type=Path, required=True)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", type=Path, help="also write the figures here")

    x = sub.add_parser("export", help="write the shipped model directory with checksums")
    x.add_argument("--model", type=Path, required=True, help="a save_pretrained directory")
    x.add_argument("--out", type=Path, default=Path("models/demo-letters"))
    x.add_argument("--card", type=Path, required=True, help="MODEL_CARD.md to ship")
    x.add_argument(
        "--blank-bias", type=float, default=0.0, help="lower blank/separator logits by this"
    )
    x.add_argument(
        "--calibration",
        type=Path,
        help="calibration.json fitted on the exported model (python -m tools.evaluate "
        "--fit-calibration, training-voice store); shipped in the model directory",
    )

    w = sub.add_parser(
        "interpolate",
        help="average fine-tuned weights with the ones they started from (WiSE-FT)",
    )
    w.add_argument("--base", type=Path, required=True, help="the --init-from of the fine-tune")
    w.add_argument("--base-blank-bias", type=float, default=0.0, help="baked into --base")
    w.add_argument("--tuned", type=Path, required=True, help="a save_pretrained directory")
    w.add_argument("--alpha", type=float, required=True, help="weight of --tuned, 0-1")
    w.add_argument("--out", type=Path, required=True)

    g = sub.add_parser(
        "grow",
        help="grow trained weights into a larger size that computes the same function (Net2Net)",
    )
    g.add_argument("--base", type=Path, required=True, help="a trained or exported model")
    g.add_argument("--base-blank-bias", type=float, default=0.0, help="baked into --base")
    g.add_argument("--size", choices=tuple(SIZES), required=True)
    g.add_argument("--out", type=Path, required=True, help="for fit --init-from --size SIZE")
    g.add_argument("--noise", type=float, default=0.01, help="relative noise on copied weights")
    g.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("calibrate", help="tune the blank bias on training-voice phrases")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--data", type=Path, default=Path(".train/data-audio"))
    c.add_argument("--set", default="trainvoices-eval")
    c.add_argument("--grid", default="0,0.5,1,1.5,2,2.5")
    c.add_argument("--threads", type=int, default=2)
    r = sub.add_parser(
        "robustness",
        help="letter error per augmentation family on held-out voices, for several models",
    )
    r.add_argument("--models", type=Path, nargs="+", required=True)
    r.add_argument("--data", type=Path, default=Path(".train/robustness"))
    r.add_argument("--phrases", type=int, default=150)
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--json", type=Path, help="also write the table here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "data":
        from tools.train.augment import ORDER

        families = ORDER if args.augment == "all" else tuple(filter(None, args.augment.split(",")))
        extra = {
            "augment": families,
            "extra_variants": args.extra_variants,
            "random_timbres": args.random_timbres,
            "mbrola_fraction": args.mbrola,
        }
        sets = {
            "train-short": SetSpec(
                args.short, (1, 3), "train", args.seed, store=args.store, **extra
            ),
            "train-long": SetSpec(
                args.long, (2, 8), "train", args.seed + 1, store=args.store, **extra
            ),
            # Never augmented, whole phrases: what `calibrate` tunes on and what `fit` reports.
            **{
                name: SetSpec(
                    count,
                    (2, 8),
                    split,
                    args.seed + offset,
                    whole_fraction=1.0,
                    chunk_size=100,
                    store=args.store,
                )
                for name, count, split, offset in (
                    ("trainvoices-eval", args.trainvoices_eval, "train", 3),
                    ("heldout", args.heldout, "heldout", 2),
                )
            },
        }
        for name, spec in sets.items():
            generate_set(args.out / name, spec, workers=args.workers)
        return 0
    if args.command == "fit":
        from tools.train.loop import TrainConfig, train

        train(
            TrainConfig(
                data=args.data,
                out=args.out,
                arch=args.arch,
                size=args.size,
                steps=args.steps,
                lr=args.lr,
                warmup=args.warmup,
                max_frames=args.max_frames,
                curriculum_steps=args.curriculum_steps,
                frame_loss_weight=args.frame_loss_weight,
                eval_every=args.eval_every,
                ckpt_every=args.ckpt_every,
                log_every=args.log_every,
                seed=args.seed,
                threads=args.threads,
                dropout=args.dropout,
                init_from=args.init_from,
                init_blank_bias=args.init_blank_bias,
            )
        )
        return 0
    if args.command == "eval":
        import torch
        from transformers import AutoModelForCTC

        from tools.train.metrics import evaluate

        torch.set_num_threads(args.threads)
        model = AutoModelForCTC.from_pretrained(str(args.model))
        res = evaluate(model, PhraseSet(args.data / args.set))
        print(json.dumps(res.summary(), indent=2))
        per_voice = {v: round(e / max(1, n), 4) for v, (e, n) in sorted(res.by_voice.items())}
        print(json.dumps({"letter_error_rate_by_variant": per_voice}, indent=2))
        return 0
    if args.command == "benchmark":
        import torch

        from tools.train.benchmark import main_benchmark

        torch.set_num_threads(args.threads)
        figures = main_benchmark(args.model, args.store)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    if args.command == "calibrate":
        import torch
        from transformers import AutoModelForCTC

        from tools.train.export import apply_blank_bias
        from tools.train.metrics import evaluate

        torch.set_num_threads(args.threads)
        data = PhraseSet(args.data / args.set)
        results = {}
        for delta in (float(x) for x in args.grid.split(",")):
            model = AutoModelForCTC.from_pretrained(str(args.model)).eval()
            apply_blank_bias(model, delta)
            summary = evaluate(model, data).summary()
            results[delta] = summary
            print(json.dumps({"blank_bias": delta, **summary}), flush=True)
        best = min(results, key=lambda d: results[d]["letter_error_rate"])
        print(json.dumps({"best_blank_bias": best}))
        return 0
    if args.command == "robustness":
        from tools.train.robustness import robustness

        table = robustness(
            args.models,
            args.data,
            phrases=args.phrases,
            seed=args.seed,
            workers=args.workers,
            threads=args.threads,
        )
        if args.json:
            args.json.write_text(json.dumps(table, indent=2) + "\n")
        return 0
    if args.command == "interpolate":
        from tools.train.export import interpolate

        interpolate(args.base, args.tuned, args.alpha, args.out, args.base_blank_bias)
        return 0
    if args.command == "grow":
        from tools.train.grow import grow, max_output_difference

        source, grown = grow(
            args.base,
            args.size,
            args.out,
            base_blank_bias=args.base_blank_bias,
            seed=args.seed,
            noise=args.noise,
        )
        parameters = sum(p.numel() for p in grown.parameters())
        difference = max_output_difference(source, grown)
        print(json.dumps({"parameters": parameters, "max_logit_difference": difference}))
        return 0
    if args.command == "export":
        from tools.train.export import export

        export(
            args.model,
            args.out,
            args.card,
            blank_bias=args.blank_bias,
            calibration=args.calibration,
        )
        return 0
    return 2
