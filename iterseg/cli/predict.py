"""``iterseg predict IMAGE...``: segment images and write their masks, overlays and reports."""
import argparse
import logging
from pathlib import Path

from .options import (
    EXAMPLES,
    add_backend,
    add_geometry,
    add_max_pixels,
    add_precision,
    add_score,
    check_settings,
    chosen_model,
    fraction,
    int_at_least,
    integer,
    real,
)

SETTINGS = ("patches", "patch_size", "score", "stride", "batch_size", "context", "budget", "budget_gmacs",
            "rounds", "threshold", "max_overlap")  # the options engine/settings.Settings holds and checks

log = logging.getLogger(__name__)


def add_parser(subparsers):
    parser = subparsers.add_parser("predict", help="segment images", epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, TIFF, ...), folders of them, or quoted glob patterns")
    add_geometry(parser)
    add_score(parser)
    parser.add_argument("--stride", type=integer, default=None, metavar="PX",
                        help="step between the grid's windows (default: the window side); smaller steps give "
                             "overlapping windows, thinned by --max-overlap, and blended results")
    parser.add_argument("--max-overlap", type=real, default=None, metavar="F",
                        help="with --stride: largest share of a window's area two chosen windows may overlap "
                             "(default 0.25)")
    parser.add_argument("--budget", type=real, default=None, metavar="F",
                        help="spend at most this fraction of the full-resolution model's MACs (e.g. 0.2)")
    parser.add_argument("--budget-gmacs", type=real, default=None, metavar="G",
                        help="spend at most this many GMACs (stage 1 included)")
    parser.add_argument("--rounds", type=integer, default=1, metavar="R",
                        help="choose the windows in R rounds, re-scoring the refined map after each (default 1)")
    parser.add_argument("--threshold", type=real, default=None, metavar="T",
                        help="refine only windows scoring above T (every score: higher = refine first); "
                             "--patches then caps their number")
    parser.add_argument("--batch-size", type=integer, default=None,
                        help="windows per stage-2 network call (default: up to 16, at most 0.5 Mpx per call)")
    add_precision(parser)
    add_backend(parser)
    parser.add_argument("--baseline", action="store_true",
                        help="run the full-resolution model over the whole image instead")
    parser.add_argument("--out", default="iterseg-out", metavar="DIR",
                        help="output folder, created if missing (default ./iterseg-out)")
    parser.add_argument("--stream", default="auto", metavar="MODE",
                        help="read tiled TIFFs region by region in bounded memory: auto (default) for tiled "
                             "TIFFs above 4096 x 4096 pixels, always, or never")
    parser.add_argument("--intensity", default="dtype", choices=("dtype", "minmax"),
                        help="how stored values map to [0, 1]: by dtype (default: uint8 / 255, uint16 / 65535, other "
                             "integers / their dtype's maximum, floats as given) or minmax: each image's own range")
    parser.add_argument("--resolution", default="model", choices=("model", "native"),
                        help="model (default): an image file whose metadata gives finer pixels than the model was "
                             "trained at (a 40x slide for a 20x model) runs at the model's pixel size, on the file's "
                             "nearest pyramid level, and its mask is at that size; native: at the file's own pixels")
    parser.add_argument("--save-probs", action="store_true",
                        help="also write the probabilities as STEM.probs.tif (float32 OME-TIFF, H x W or H x W x K "
                             "for K classes; pyramidal for streamed images); not written by default")
    parser.add_argument("--cutoff", type=open_fraction, default=None, metavar="P",
                        help="binary models: foreground where its probability is >= P (default 0.5)")
    parser.add_argument("--min-size", type=int_at_least(0), default=0, metavar="PX",
                        help="remove connected regions smaller than PX pixels from the mask (default 0: keep all; "
                             "not for streamed images)")
    parser.add_argument("--fill-holes", action="store_true",
                        help="fill background holes enclosed by a region (not for streamed images)")
    parser.add_argument("--geojson", action="store_true",
                        help="also write the mask's contours as STEM.contours.geojson (polygons in pixel coordinates "
                             "with a classification per class; QuPath imports them as annotations); streamed images: "
                             "traced on the stage-1-scale overview")
    parser.add_argument("--overlay-colour", "--overlay-color", type=colour, default=None, metavar="COLOUR",
                        help="tint of the foreground in STEM.overlay.png: R,G,B or red, green, blue, yellow, "
                             "cyan, magenta, orange, white, black (default: red, green for models trained on "
                             "fundus photographs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose outputs exist (default: skip them)")
    add_max_pixels(parser)
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors; no progress bars")
    parser.add_argument("--shard", type=shard, default=None, metavar="I/N",
                        help="segment only part I of N of the images (every N-th from the I-th, 1 <= I <= N), for "
                             "job arrays: task I of N runs --shard I/N on the same inputs into the same --out. "
                             "Without it, processes started on one folder share its images as they go")
    parser.add_argument("--cluster", default=None, metavar="SPEC",
                        help="run the images as tasks on a Dask cluster (needs pip install 'iterseg[dask]'): "
                             "local:N starts N single-threaded worker processes here, tcp://HOST:PORT or a "
                             "scheduler file FILE.json uses a running scheduler whose workers see the same files; "
                             "same outputs, summary and skip rules as without it")
    return parser


def open_fraction(text):
    """A probability strictly between 0 and 1."""
    value = fraction(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
    return value


def shard(text):
    """'I/N' with 1 <= I <= N -> (I, N)."""
    index, _, count = str(text).partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N (part I of N, e.g. 3/8; shards count "
                                         f"from 1, so SLURM's --array=1-N gives $SLURM_ARRAY_TASK_ID/N), got {text!r}")
    return int(index), int(count)


def colour(text):
    """'R,G,B' or a colour name -> (r, g, b) (disk/outputs.parse_colour)."""
    from ..disk.outputs import parse_colour
    try:
        return parse_colour(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args):
    from ..api import load
    from ..batch import expand_inputs, output_folder, shard_of
    from ..engine.source import STREAM_MODES
    from ..errors import InputError

    check_settings(args, SETTINGS)
    if args.stream not in STREAM_MODES:
        raise InputError(f"--stream must be one of {', '.join(STREAM_MODES)}, got {args.stream!r}.")
    if args.cluster:
        from ..cluster import parse_cluster, require_dask
        parse_cluster(args.cluster)  # a malformed value is named first, installed or not
        require_dask()
    paths = expand_inputs(args.images, Path(args.out))
    if args.shard:
        paths = shard_of(paths, args.shard)
    out_dir = output_folder(args.out)
    # no rehearsal at load (api.warm_up_image): a single image would pay its first call twice, and a
    # folder's first image pays it once either way
    segmenter = load(chosen_model(args), precision=args.precision, backend=args.backend, warm_up=False)
    if segmenter.bundle.untrained and not args.quiet:
        log.warning("model 'untrained' has random weights: its masks mean nothing; it only exercises the "
                    "engine. Pass --model with a trained bundle.")
    many = args.cluster or args.shard or len(paths) != 1 or any(
        Path(item).is_dir() or not Path(item).exists() for item in args.images)
    return (_predict_many if many else _predict_one)(segmenter, paths, out_dir, args)


def _options(args):
    """The two-stage options of ``args`` as ``batch.predict_file`` takes them."""
    from ..postprocess import MASK_OPTIONS
    mask = {name: getattr(args, name) for name in MASK_OPTIONS}  # only those given (0 and False are defaults)
    return {**{name: getattr(args, name) for name in SETTINGS}, "intensity": args.intensity,
            "resolution": args.resolution, **{k: v for k, v in mask.items() if v}}


def _writing(args):
    """The output options of ``args`` as ``batch.predict_file`` takes them."""
    return {"geojson": args.geojson, "overlay_colour": args.overlay_colour}


def _predict_one(segmenter, paths, out_dir, args):
    """One image: its error is the run's error (one line, exit 2)."""
    from ..batch import done_report
    from ..claims import Claims, remove_stale_partials

    done = None if args.overwrite else done_report(paths[0], out_dir)
    if done:
        log.info("%s: skipped, %s exists (use --overwrite to redo it)", paths[0], done)
        return 0
    remove_stale_partials(out_dir)
    claims = Claims(out_dir)
    if claims.take(paths[0].stem) is None:
        log.info("%s: skipped, another process is segmenting it into %s", paths[0], out_dir)
        return 0
    try:
        return _predict_claimed(segmenter, paths[0], out_dir, args)
    finally:
        claims.close()


def _predict_claimed(segmenter, path, out_dir, args):
    from ..batch import predict_file
    from ..report import summary

    report = predict_file(segmenter, path, out_dir, _options(args), baseline=args.baseline, stream=args.stream,
                          save_probs=args.save_probs, show_progress=not args.quiet, max_pixels=args.max_pixels,
                          **_writing(args))
    _warn(report)
    if not args.quiet:
        print(summary(report))
    return 0


def _warn(report):
    """Log the warnings among the report's notes (engine/checks.py): an input unlike the training
    data, a refinement dearer than the baseline."""
    from ..engine.checks import warnings_in
    for warning in warnings_in(report["notes"]):
        log.warning("%s: %s", report["image"]["path"], warning)


def _predict_many(segmenter, paths, out_dir, args):
    """Several images: each failure is logged and the others go on; exit 2 if any failed."""
    from ..batch import count_rows, predict_files
    from ..report import summary

    def done(report):
        _warn(report)
        if not args.quiet:
            print(summary(report), flush=True)

    def failed(path, exc):
        log.error("%s", exc)

    summary_path = out_dir / "summary.csv"
    with _client(args) as client:
        rows = predict_files(segmenter, paths, out_dir, _options(args), overwrite=args.overwrite,
                             summary_path=summary_path, on_done=done, on_error=failed, client=client,
                             baseline=args.baseline, stream=args.stream, save_probs=args.save_probs,
                             show_progress=not args.quiet, max_pixels=args.max_pixels, **_writing(args))
    counts = count_rows(rows)
    others = len(paths) - len(rows)
    level = logging.ERROR if counts["failed"] else logging.INFO
    log.log(level, "%d images: %d done, %d skipped (outputs exist), %d failed%s; summary in %s", len(paths),
            counts["done"], counts["skipped"], counts["failed"],
            f", {others} left to other processes running into {out_dir}" if others else "", summary_path)
    return 2 if counts["failed"] else 0


def _client(args):
    """The Dask client of --cluster (iterseg/cluster.py), or a context holding None without it."""
    import contextlib

    if not args.cluster:
        return contextlib.nullcontext()
    from ..cluster import connect
    return connect(args.cluster)
