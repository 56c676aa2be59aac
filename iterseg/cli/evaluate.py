"""``iterseg evaluate``: Dice, IoU and boundary F1 against cost on a data spec, for several N_p."""
import argparse
import sys
from pathlib import Path

from .options import (
    add_backend,
    add_max_pixels,
    add_model,
    add_precision,
    add_score,
    add_spec,
    check_settings,
    chosen_model,
    int_at_least,
    integer,
    patch_list,
    patch_size,
)

EPILOG = """example:
  iterseg evaluate --spec drive --model drive --data-root ../shared/data --patches 0,1,2,4,8,16,32"""


def add_parser(subparsers):
    parser = subparsers.add_parser("evaluate", help="Dice, IoU and boundary F1 against cost on a data spec",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec(parser)
    add_model(parser)
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--patches", type=patch_list, default=[0, 1, 2, 4, 8, 16, 32],
                        help="comma-separated N_p values (0 = stage 1 only); the baseline is always added")
    parser.add_argument("--patch-size", type=patch_size, default=None, metavar="PX",
                        help="window side, or 'tied', as for predict (default: the model's side)")
    parser.add_argument("--context", type=integer, default=None, metavar="PX",
                        help="pixels of image stage 2 sees around each window, as for predict (default: the model's)")
    add_score(parser)
    add_precision(parser)
    add_backend(parser)
    parser.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N images")
    parser.add_argument("--out", default="iterseg-eval", metavar="DIR",
                        help="folder for the JSON and Markdown reports")
    add_max_pixels(parser)
    parser.add_argument("--quiet", action="store_true")
    return parser


def run(args):
    from ..api import load
    from ..batch import output_folder
    from ..training.data import load_spec
    from ..training.evaluate import evaluate, markdown_table, write_report

    check_settings(args, ("patch_size", "context", "score"))
    spec = load_spec(args.spec, args.data_root, max_pixels=args.max_pixels)
    out_dir = output_folder(args.out)
    model = chosen_model(args)
    segmenter = load(model, precision=args.precision, backend=args.backend)

    def progress(done, total, sample_id):
        if not args.quiet:
            print(f"  [{done}/{total}] {sample_id}", file=sys.stderr, flush=True)

    windows = {name: getattr(args, name) for name in ("patch_size", "context") if getattr(args, name) is not None}
    report = evaluate(segmenter, spec, args.split, args.patches, score=args.score, limit=args.limit,
                      progress=progress, **windows)
    # named by what was asked, so that the same command names its output alike on every CPU; the
    # report inside says which precision ran
    stem = f"{spec.name}_{args.split}_{Path(str(model)).stem}"
    if args.precision not in ("auto", "fp32"):
        stem += f"_{args.precision}"
    write_report(report, out_dir / f"{stem}.json", out_dir / f"{stem}.md")
    print(markdown_table(report))
    return 0
