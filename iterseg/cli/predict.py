"""``iterseg predict IMAGE...``: segment images and write their masks, overlays and reports."""
import argparse
import logging
from pathlib import Path

from .options import (
    EXAMPLES,
    add_geometry,
    add_precision,
    add_score,
    chosen_model,
    fraction,
    int_at_least,
    positive_float,
)

log = logging.getLogger(__name__)


def add_parser(subparsers):
    parser = subparsers.add_parser("predict", help="segment images", epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, TIFF, ...), folders of them, or quoted glob patterns")
    add_geometry(parser)
    add_score(parser)
    parser.add_argument("--stride", type=int_at_least(1), default=None, metavar="PX",
                        help="step between the grid's windows (default: the window side); smaller steps give "
                             "overlapping windows, thinned by --max-overlap, and blended results")
    parser.add_argument("--max-overlap", type=fraction, default=None, metavar="F",
                        help="with --stride: largest share of a window's area two chosen windows may overlap "
                             "(default 0.25)")
    parser.add_argument("--budget", type=positive_float, default=None, metavar="F",
                        help="spend at most this fraction of the full-resolution model's MACs (e.g. 0.2)")
    parser.add_argument("--budget-gmacs", type=positive_float, default=None, metavar="G",
                        help="spend at most this many GMACs (stage 1 included)")
    parser.add_argument("--rounds", type=int_at_least(1), default=1, metavar="R",
                        help="choose the windows in R rounds, re-scoring the refined map after each (default 1)")
    parser.add_argument("--threshold", type=fraction, default=None, metavar="T",
                        help="refine only windows scoring above T (every score: higher = refine first); "
                             "--patches then caps their number")
    parser.add_argument("--batch-size", type=int_at_least(1), default=None,
                        help="windows per stage-2 network call (default: up to 16, at most 0.5 Mpx per call)")
    add_precision(parser)
    parser.add_argument("--baseline", action="store_true",
                        help="run the full-resolution model over the whole image instead")
    parser.add_argument("--out", default="iterseg-out", metavar="DIR",
                        help="output folder, created if missing (default ./iterseg-out)")
    parser.add_argument("--stream", default="auto", metavar="MODE",
                        help="read tiled TIFFs region by region in bounded memory: auto (default) for tiled "
                             "TIFFs above 4096 x 4096 pixels, always, or never")
    parser.add_argument("--save-probs", action="store_true",
                        help="also write the probabilities of streamed images (always written otherwise)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose outputs exist (default: skip them)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors; no progress bars")
    return parser


def run(args):
    from ..api import load
    from ..batch import STREAM_MODES, expand_inputs, output_folder
    from ..errors import InputError

    if args.stream not in STREAM_MODES:
        raise InputError(f"--stream must be one of {', '.join(STREAM_MODES)}, got {args.stream!r}.")
    paths = expand_inputs(args.images)
    out_dir = output_folder(args.out)
    segmenter = load(chosen_model(args), precision=args.precision)
    if segmenter.bundle.untrained and not args.quiet:
        log.warning("model 'untrained' has random weights: its masks mean nothing; it only exercises the "
                    "engine. Pass --model with a trained bundle.")
    many = len(paths) > 1 or any(Path(item).is_dir() or not Path(item).exists() for item in args.images)
    return (_predict_many if many else _predict_one)(segmenter, paths, out_dir, args)


def _options(args):
    """The two-stage options of ``args`` as ``batch.predict_file`` takes them."""
    names = ("patches", "patch_size", "score", "stride", "batch_size", "context", "budget", "budget_gmacs",
             "rounds", "threshold", "max_overlap")
    return {name: getattr(args, name) for name in names}


def _predict_one(segmenter, paths, out_dir, args):
    """One image: its error is the run's error (one line, exit 2)."""
    from ..batch import predict_file
    from ..report import summary

    report = predict_file(segmenter, paths[0], out_dir, _options(args), baseline=args.baseline, stream=args.stream,
                          save_probs=args.save_probs, show_progress=not args.quiet)
    if not args.quiet:
        print(summary(report))
    return 0


def _predict_many(segmenter, paths, out_dir, args):
    """Several images: each failure is logged and the others go on; exit 2 if any failed."""
    from ..batch import predict_files
    from ..report import summary

    def done(report):
        if not args.quiet:
            print(summary(report), flush=True)

    def failed(path, exc):
        log.error("%s", exc)

    summary_path = out_dir / "summary.csv"
    rows = predict_files(segmenter, paths, out_dir, _options(args), overwrite=args.overwrite,
                         summary_path=summary_path, on_done=done, on_error=failed, baseline=args.baseline,
                         stream=args.stream, save_probs=args.save_probs, show_progress=not args.quiet)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("done", "skipped", "failed")}
    level = logging.ERROR if counts["failed"] else logging.INFO
    log.log(level, "%d images: %d done, %d skipped (outputs exist), %d failed; summary in %s", len(rows),
            counts["done"], counts["skipped"], counts["failed"], summary_path)
    return 2 if counts["failed"] else 0
