"""``iterseg train``: train stage 1 and/or stage 2 on a data spec; writes a bundle once both exist.

Options left out keep the defaults of ``training.loop.TrainOptions`` (one place for them)."""
import argparse
import dataclasses
import sys
from pathlib import Path

from .options import add_spec, fraction, int_at_least, positive_float

EPILOG = """example:
  iterseg train --spec ph2 --data-root ../shared/data --stage both --out runs/ph2"""

# TrainOptions field for each option that maps onto one unchanged
FIELDS = {"epochs": "epochs", "steps": "steps_per_epoch", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
          "width": "width", "depth": "depth", "sampling": "sampling", "max_minutes": "max_minutes",
          "condition": "condition", "init_from": "init_from", "s1_scale": "s1_scale"}
CROP = {"s1": 128, "s2": 256}  # default --crop per stage


def add_parser(subparsers):
    parser = subparsers.add_parser("train", help="train stage 1 or 2 on a data spec; writes a bundle when both exist",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec(parser)
    parser.add_argument("--stage", choices=("s1", "s2", "both"), required=True)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="run folder: <stage>/{last,best}.pt, log.csv, and the bundle")
    parser.add_argument("--name", default=None, help="bundle name (default: the spec's name)")
    parser.add_argument("--epochs", type=int_at_least(1), default=None)
    parser.add_argument("--steps", type=int_at_least(1), default=None, help="steps per epoch")
    parser.add_argument("--batch-size", type=int_at_least(1), default=None,
                        help="crops per step at the largest crop size (smaller crops: more per step)")
    parser.add_argument("--crop", type=int_at_least(16), default=None, metavar="PX",
                        help=f"S1: crop side at stage-1 scale (default {CROP['s1']}); S2: largest crop side "
                             f"(default {CROP['s2']})")
    parser.add_argument("--s1-scale", type=fraction, default=None, metavar="F",
                        help="stage 1 sees the image resized by F (default: the smallest of 1/8, 1/4, 1/2 at "
                             "which the training masks survive shrinking, else 1: full resolution at width 4, see "
                             "training/scale.py); the bundle records it")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--width", type=int_at_least(1), default=None,
                        help="U-Net channels at full scale (default 16; stage 1 at scale 1/2: 8)")
    parser.add_argument("--depth", type=int_at_least(1), default=None, help="U-Net poolings")
    parser.add_argument("--sampling", choices=("uniform", "uncertain"), default=None,
                        help="S2 crop centres: uniform (default), or in proportion to S1 uncertainty "
                             "(needs S1 trained)")
    parser.add_argument("--condition", action="store_true",
                        help="S2 also sees the stage-1 probabilities of its window (a conditioned S2)")
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="S2: take S1 from this bundle and start S2 from its S2 (with --condition, an "
                             "unconditioned S2 gains the new input channels at zero and stays the baseline's "
                             "reference network; a conditioned S2 without one is fine-tuned as it is). S1: train "
                             "a new stage 1 (e.g. at another --s1-scale) for this bundle's S2 and write the bundle")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto (default): bf16 autocast where the CPU has bf16 units (AMX, or AVX-512 BF16 "
                             "measured faster), fp32 elsewhere (AVX2, where bf16 is emulated and ~8x slower)")
    parser.add_argument("--no-bf16", action="store_true", help="deprecated: same as --precision fp32")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/<stage>/last.pt")
    parser.add_argument("--max-minutes", type=positive_float, default=None, metavar="M",
                        help="train for this many minutes in all (with --stage both, stage 1 gets a third and "
                             "stage 2 the rest); the learning rate schedule spans the time, not --epochs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    return parser


def run(args):
    from ..training.assemble import assemble_bundle
    from ..training.data import load_spec
    from ..training.loop import train_stage

    spec = load_spec(args.spec, args.data_root)
    stages = ("s1", "s2") if args.stage == "both" else (args.stage,)
    minutes_left = args.max_minutes
    for stage in stages:
        opts = train_options(args, stage)
        if minutes_left is not None:  # one budget for the run: stage 1 gets a third of it, stage 2 the rest
            opts = dataclasses.replace(opts, max_minutes=minutes_left / 3 if stage == "s1" and len(stages) == 2
                                       else minutes_left)
        result = train_stage(spec, opts, args.out, resume=args.resume, quiet=args.quiet)
        if minutes_left is not None:
            minutes_left = max(minutes_left - result["seconds"] / 60, 0.1)
        print(f"{stage}: best validation Dice {result['best_val_dice']:.4f} after {result['seconds'] / 60:.1f} min")
    out = Path(args.out)
    trained_s2 = (out / "s2" / "summary.json").is_file()
    if (trained_s2 and (args.init_from or (out / "s1" / "summary.json").is_file())) or (
            args.stage == "s1" and args.init_from):
        command = "iterseg " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("iterseg") else None
        path = assemble_bundle(spec, args.out, args.name or spec.name, command)
        print(f"bundle written: {path} ({path.stat().st_size / 2 ** 20:.1f} MB)")
    return 0


def train_options(args, stage):
    """The TrainOptions of ``stage`` ('s1' or 's2'): the options given, TrainOptions' defaults otherwise."""
    from ..training.loop import TrainOptions

    given = {field: getattr(args, name) for name, field in FIELDS.items() if getattr(args, name) is not None}
    crop = args.crop or CROP[stage]
    crop_sizes = tuple(side for side in TrainOptions.crop_sizes if side <= crop) or (crop,)
    precision = "fp32" if args.no_bf16 else args.precision  # --no-bf16: deprecated alias of --precision fp32
    return TrainOptions(stage=stage, crop=crop, crop_sizes=crop_sizes, precision=precision, **given)
