"""Command line for the synthesizer.

Examples::

    # a labeled evaluation store: 3 days x 40 activities in held-out voices
    python -m tools.synthesize dataset --out .tmp/eval-store --seed 1 \\
        --start-date 2026-11-01 --days 3 --activities 40 --voices heldout

    # the sample day shipped for `make demo`
    python -m tools.synthesize sample-day --out data/sample-store

    # the voice split
    python -m tools.synthesize voices --split heldout
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from tools.synthesize.dataset import (
    SAMPLE_DAY,
    describe,
    generate_dataset,
    generate_sample_day,
)
from tools.synthesize.foreign import DEFAULT_CACHE, SYNTHESIZERS, ClipBank, foreign_voices
from tools.synthesize.plan import ErrorRates
from tools.synthesize.voices import voices


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.synthesize",
        description="Synthesize labeled letter-reading activities with espeak-ng.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("dataset", help="write a labeled store (catalog + audio + ground truth)")
    ds.add_argument("--out", type=Path, required=True, help="store root directory")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--start-date", type=dt.date.fromisoformat, default=SAMPLE_DAY)
    ds.add_argument("--days", type=int, default=1)
    ds.add_argument("--activities", type=int, default=20, help="activities per day")
    ds.add_argument("--phrases", type=_range, default=(4, 6), help="phrases per activity, e.g. 4-6")
    ds.add_argument("--tenants", type=int, default=2)
    ds.add_argument("--voices", choices=("train", "heldout", "all"), default="heldout")
    ds.add_argument("--render", choices=("whole", "spliced", "mixed"), default="whole")
    ds.add_argument("--noise-prob", type=float, default=0.3)
    ds.add_argument("--substitution", type=float, default=ErrorRates.substitution)
    ds.add_argument("--deletion", type=float, default=ErrorRates.deletion)
    ds.add_argument("--insertion", type=float, default=ErrorRates.insertion)
    ds.add_argument("--noise-only", type=float, default=ErrorRates.noise_only)
    ds.add_argument("--silent", type=float, default=ErrorRates.silent)

    sd = sub.add_parser("sample-day", help="write the small demo store for 2026-11-27")
    sd.add_argument("--out", type=Path, default=Path("data/sample-store"))
    sd.add_argument("--seed", type=int, default=20261127)

    fs = sub.add_parser(
        "foreign",
        help="a labeled store read by another synthesizer (festival, FreeTTS, flite): "
        "evaluation only",
    )
    fs.add_argument("--out", type=Path, required=True, help="store root directory")
    fs.add_argument("--synthesizer", choices=SYNTHESIZERS, required=True)
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--start-date", type=dt.date.fromisoformat, default=SAMPLE_DAY)
    fs.add_argument("--days", type=int, default=1)
    fs.add_argument("--activities", type=int, default=20, help="activities per day")
    fs.add_argument("--phrases", type=_range, default=(4, 6), help="phrases per activity")
    fs.add_argument("--noise-prob", type=float, default=0.3)
    fs.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="letter-clip cache")

    vs = sub.add_parser("voices", help="list the voices on one side of the split")
    vs.add_argument("--split", choices=("train", "heldout", "all"), default="heldout")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "voices":
        for v in voices(args.split):
            print(v.name)
        return 0
    if args.command == "foreign":
        bank = ClipBank(args.cache)
        counts = generate_dataset(
            args.out,
            seed=args.seed,
            start_date=args.start_date,
            days=args.days,
            activities_per_day=args.activities,
            phrases_range=args.phrases,
            noise_prob=args.noise_prob,
            voice_pool=[v.as_voice for v in foreign_voices(args.synthesizer)],
            renderer=bank.render,
        )
    elif args.command == "sample-day":
        counts = generate_sample_day(args.out, seed=args.seed)
    else:
        counts = generate_dataset(
            args.out,
            seed=args.seed,
            start_date=args.start_date,
            days=args.days,
            activities_per_day=args.activities,
            phrases_range=args.phrases,
            tenants=args.tenants,
            split=args.voices,
            rates=ErrorRates(
                substitution=args.substitution,
                deletion=args.deletion,
                insertion=args.insertion,
                noise_only=args.noise_only,
                silent=args.silent,
            ),
            noise_prob=args.noise_prob,
            render_mode=args.render,
        )
    print(counts)
    print(describe(args.out))
    return 0
