"""Command line: ``iterseg predict``, ``iterseg flops`` and ``iterseg models``.

``main(argv) -> int`` parses, calls the library, prints; exit codes: 0 ok, 2 bad input or usage
(one line on stderr saying what is wrong and what to do), 1 internal error.
"""
import argparse
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path

from .data import DATA_ROOT_ENV, builtin_specs, load_spec
from .errors import InputError, IterSegError
from .evaluate import evaluate, markdown_table, write_report
from .files import STREAM_MODES, expand_inputs, output_folder, predict_file, predict_files
from .model.runtime import PRECISIONS
from .model.store import DEFAULT_MODEL, available_models, load_bundle, save_bundle
from .pipeline import load
from .report import summary
from .select import SCORES
from .train import TrainOptions, assemble_bundle, train_stage
from .training.calibrate import calibrate_bundle, calibration_images

log = logging.getLogger("iterseg")

EXAMPLES = """examples:
  iterseg predict image.png --patches 16 --out results/
  iterseg predict scans/*.tif --patches 32 --model my_bundle.pt --score uncertainty
  iterseg flops --size 2048x2048 --patches 16
"""


class UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit, so ``main`` can return 2 with one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _number(low, high=None):
    """Parser of a number > low, or of one in [low, high] when ``high`` is given."""
    wanted = f"> {low:g}" if high is None else f"between {low:g} and {high:g}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}") from None
        if not (value > low if high is None else low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}")
        return value
    return parse


_positive_float = _number(0)
_fraction = _number(0, 1)


def _size(text):
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 2048x2048, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"height and width must be >= 1, got {text!r}")
    return height, width


def _add_geometry(parser):
    parser.add_argument("--patches", type=_int_at_least(0), default=16,
                        help="number of windows refined at full resolution (0 = stage 1 only; default 16, "
                             "or with --budget / --threshold no cap but theirs)")
    parser.add_argument("--patch-size", type=_int_at_least(1), default=None, metavar="PX",
                        help="window side in pixels (default: ceil(max(H, W) / patches), rounded up to "
                             "the model's size multiple)")
    parser.add_argument("--context", type=_int_at_least(0), default=0, metavar="PX",
                        help="pixels of surrounding image stage 2 sees around each window (default 0)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"embedded model name ({', '.join(available_models())}) or bundle file "
                             f"(default {DEFAULT_MODEL})")


def build_parser():
    parser = Parser(prog="iterseg", description="Two-stage segmentation of high-resolution images.",
                    epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    predict = commands.add_parser("predict", help="segment images", epilog=EXAMPLES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files (PNG, JPEG, TIFF, ...), folders of them, or quoted glob patterns")
    _add_geometry(predict)
    predict.add_argument("--score", choices=SCORES, default=None,
                         help="window score (default: mean for binary models, margin for multi-class)")
    predict.add_argument("--stride", type=_int_at_least(1), default=None, metavar="PX",
                         help="step between candidate windows (default: the window side); smaller steps give "
                              "overlapping candidates, thinned by --max-overlap, and blended results")
    predict.add_argument("--max-overlap", type=_fraction, default=None, metavar="F",
                         help="with --stride: largest share of a window's area two chosen windows may overlap "
                              "(default 0.25)")
    predict.add_argument("--budget", type=_positive_float, default=None, metavar="F",
                         help="spend at most this fraction of the full-resolution model's MACs (e.g. 0.2)")
    predict.add_argument("--budget-gmacs", type=_positive_float, default=None, metavar="G",
                         help="spend at most this many GMACs (stage 1 included)")
    predict.add_argument("--rounds", type=_int_at_least(1), default=1, metavar="R",
                         help="choose the windows in R rounds, re-scoring the refined map after each (default 1)")
    predict.add_argument("--threshold", type=_fraction, default=None, metavar="T",
                         help="refine only windows less certain than this score (below T for mean and margin, "
                              "above T for uncertainty); --patches then caps their number")
    predict.add_argument("--batch-size", type=_int_at_least(1), default=None,
                         help="windows per stage-2 network call (default: up to 16, at most 0.5 Mpx per call)")
    _add_precision(predict)
    predict.add_argument("--baseline", action="store_true",
                         help="run the full-resolution model over the whole image instead")
    predict.add_argument("--out", default="iterseg-out", metavar="DIR",
                         help="output folder, created if missing (default ./iterseg-out)")
    predict.add_argument("--stream", choices=STREAM_MODES, default="auto",
                         help="read tiled TIFFs region by region in bounded memory: auto (default) for tiled "
                              "TIFFs above 4096 x 4096 pixels, always, or never")
    predict.add_argument("--save-probs", action="store_true",
                         help="also write the probabilities of streamed images (always written otherwise)")
    predict.add_argument("--overwrite", action="store_true",
                         help="redo images whose outputs exist (default: skip them)")
    predict.set_defaults(patches=None)  # 16 unless --budget or --threshold decide (pipeline.two_stage)
    predict.add_argument("--quiet", action="store_true", help="print nothing but errors; no progress bars")

    flops = commands.add_parser("flops", help="print the cost table for an image size, without an image")
    flops.add_argument("--size", type=_size, required=True, metavar="HxW", help="image size, e.g. 2048x2048")
    _add_geometry(flops)

    commands.add_parser("models", help="list the embedded models")
    _add_train(commands)
    _add_evaluate(commands)
    _add_quantize(commands)
    return parser


def _add_quantize(commands):
    quantize = commands.add_parser(
        "quantize", help="calibrate an int8 copy of a model on a few training images (for --precision int8)",
        epilog="example:\n  iterseg quantize --model drive --spec drive --data-root ../shared/data --out drive-int8.pt\n"
               "  iterseg predict image.png --model drive-int8.pt --precision int8",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    quantize.add_argument("--model", default=DEFAULT_MODEL, help="embedded model name or bundle file to quantize")
    _add_spec(quantize)
    quantize.add_argument("--images", type=_int_at_least(1), default=8,
                          help="training images to calibrate on (default 8, drawn with --seed)")
    quantize.add_argument("--seed", type=int, default=0)
    quantize.add_argument("--out", required=True, metavar="FILE", help="the int8 bundle to write")


def _patch_list(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,4,16, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return values


def _add_evaluate(commands):
    evaluate = commands.add_parser("evaluate", help="Dice, IoU and boundary F1 against cost on a data spec",
                                   epilog="example:\n  iterseg evaluate --spec drive --model drive --data-root "
                                          "../shared/data --patches 0,1,2,4,8,16,32",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_spec(evaluate)
    evaluate.add_argument("--model", default=DEFAULT_MODEL, help="embedded model name or bundle file")
    evaluate.add_argument("--split", default="test", choices=("train", "test", "all"))
    evaluate.add_argument("--patches", type=_patch_list, default=[0, 1, 2, 4, 8, 16, 32],
                          help="comma-separated N_p values (0 = stage 1 only); the baseline is always added")
    evaluate.add_argument("--score", choices=SCORES, default=None)
    _add_precision(evaluate)
    evaluate.add_argument("--limit", type=_int_at_least(1), default=None, help="only the first N images")
    evaluate.add_argument("--out", default="iterseg-eval", metavar="DIR", help="folder for the JSON and Markdown reports")
    evaluate.add_argument("--quiet", action="store_true")


def _add_precision(parser):
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default, the reference); bf16: bfloat16 autocast with channels_last, "
                             "several times faster on CPUs with AVX-512 BF16/AMX (much slower without), Dice "
                             "within ~0.002; int8: an int8 bundle made by `iterseg quantize`, compiled per "
                             "input shape on first use")


def _add_spec(parser):
    parser.add_argument("--spec", required=True, help=f"shipped spec name ({', '.join(builtin_specs())}) or YAML file")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help=f"folder the spec's paths are relative to (default ${DATA_ROOT_ENV})")


def _add_train(commands):
    defaults = TrainOptions()
    train = commands.add_parser("train", help="train stage 1 or 2 on a data spec; writes a bundle when both exist",
                                epilog="example:\n  iterseg train --spec ph2 --data-root ../shared/data --stage both "
                                       "--out runs/ph2", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_spec(train)
    train.add_argument("--stage", choices=("s1", "s2", "both"), required=True)
    train.add_argument("--out", required=True, metavar="DIR", help="run folder: <stage>/{last,best}.pt, log.csv, and the bundle")
    train.add_argument("--name", default=None, help="bundle name (default: the spec's name)")
    train.add_argument("--epochs", type=_int_at_least(1), default=defaults.epochs)
    train.add_argument("--steps", type=_int_at_least(1), default=defaults.steps_per_epoch, help="steps per epoch")
    train.add_argument("--batch-size", type=_int_at_least(1), default=defaults.batch_size,
                       help="crops per step at the largest crop size (smaller crops: more per step)")
    train.add_argument("--crop", type=_int_at_least(16), default=None, metavar="PX",
                       help="S1: crop side at 1/8 scale (default 128); S2: largest crop side (default 256)")
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--width", type=_int_at_least(1), default=defaults.width, help="U-Net channels at full scale")
    train.add_argument("--depth", type=_int_at_least(1), default=defaults.depth, help="U-Net poolings")
    train.add_argument("--sampling", choices=("uniform", "uncertain"), default="uniform",
                       help="S2 crop centres: uniform, or in proportion to S1 uncertainty (needs S1 trained)")
    train.add_argument("--condition", action="store_true",
                       help="S2 also sees the stage-1 probabilities of its window (a conditioned S2)")
    train.add_argument("--init-from", default=None, metavar="MODEL",
                       help="S2 only: take S1 from this bundle and start S2 from its S2 (with --condition, an "
                            "unconditioned S2 gains the new input channels at zero and stays the baseline's reference "
                            "network; a conditioned S2 without one is fine-tuned as it is)")
    train.add_argument("--no-bf16", action="store_true", help="train in float32 (slower on CPU)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/<stage>/last.pt")
    train.add_argument("--max-minutes", type=float, default=None, help="stop a stage after this much training time")
    train.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")


def cmd_predict(args):
    paths = expand_inputs(args.images)
    out_dir = output_folder(args.out)
    segmenter = load(args.model, precision=args.precision)
    if segmenter.bundle.untrained and not args.quiet:
        log.warning("model 'untrained' has random weights: its masks mean nothing; it only exercises the "
                    "engine. Pass --model with a trained bundle.")
    many = len(paths) > 1 or any(Path(item).is_dir() or not Path(item).exists() for item in args.images)
    options = {"patches": args.patches, "patch_size": args.patch_size, "score": args.score, "stride": args.stride,
               "batch_size": args.batch_size, "context": args.context, "budget": args.budget,
               "budget_gmacs": args.budget_gmacs, "rounds": args.rounds, "threshold": args.threshold,
               "max_overlap": args.max_overlap}
    if not many:  # one image: its error is the run's error (one line, exit 2)
        report = predict_file(segmenter, paths[0], out_dir, options, baseline=args.baseline, stream=args.stream,
                              save_probs=args.save_probs, show_progress=not args.quiet)
        if not args.quiet:
            print(summary(report))
        return 0

    def done(report):
        if not args.quiet:
            print(summary(report), flush=True)

    def failed(path, exc):
        log.error("%s", exc)

    rows = predict_files(segmenter, paths, out_dir, options, overwrite=args.overwrite,
                         summary_path=out_dir / "summary.csv", on_done=done, on_error=failed,
                         baseline=args.baseline, stream=args.stream, save_probs=args.save_probs,
                         show_progress=not args.quiet)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "skipped", "failed")}
    level = logging.ERROR if counts["failed"] else logging.INFO
    log.log(level, "%d images: %d done, %d skipped (outputs exist), %d failed; summary in %s", len(rows),
            counts["done"], counts["skipped"], counts["failed"], out_dir / "summary.csv")
    return 2 if counts["failed"] else 0


def cmd_flops(args):
    height, width = args.size
    segmenter = load(args.model)
    macs = segmenter.macs(height, width, patches=args.patches, patch_size=args.patch_size, context=args.context)
    print(f"{width} x {height} image, model {segmenter.bundle.name}, {args.patches} patches "
          f"({macs['convention']})")
    for key in ("stage1", "stage2", "total", "baseline"):
        print(f"  {key:<9} {macs[key] / 1e9:12.3f} GMACs")
    print(f"  ratio     {100 * macs['ratio']:12.2f} %")
    if macs["uncounted_ops"]:
        print(f"  not counted by fvcore: {', '.join(macs['uncounted_ops'])}")
    return 0


def cmd_train(args):
    spec = load_spec(args.spec, args.data_root)
    stages = ("s1", "s2") if args.stage == "both" else (args.stage,)
    for stage in stages:
        crop = args.crop or (128 if stage == "s1" else 256)
        opts = TrainOptions(stage=stage, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                            crop=crop, crop_sizes=tuple(s for s in TrainOptions.crop_sizes if s <= crop) or (crop,),
                            lr=args.lr, seed=args.seed, bf16=not args.no_bf16, width=args.width, depth=args.depth,
                            sampling=args.sampling, max_minutes=args.max_minutes, condition=args.condition,
                            init_from=args.init_from)
        result = train_stage(spec, opts, args.out, resume=args.resume, quiet=args.quiet)
        print(f"{stage}: best validation Dice {result['best_val_dice']:.4f} after {result['seconds'] / 60:.1f} min")
    if (Path(args.out) / "s2" / "summary.json").is_file() and (
            args.init_from or (Path(args.out) / "s1" / "summary.json").is_file()):
        command = "iterseg " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("iterseg") else None
        path = assemble_bundle(spec, args.out, args.name or spec.name, command)
        print(f"bundle written: {path} ({path.stat().st_size / 2 ** 20:.1f} MB)")
    return 0


def cmd_evaluate(args):
    spec = load_spec(args.spec, args.data_root)
    out_dir = output_folder(args.out)
    segmenter = load(args.model, precision=args.precision)

    def progress(done, total, sample_id):
        if not args.quiet:
            print(f"  [{done}/{total}] {sample_id}", file=sys.stderr, flush=True)

    report = evaluate(segmenter, spec, args.split, args.patches, score=args.score, limit=args.limit, progress=progress)
    stem = f"{spec.name}_{args.split}_{Path(str(args.model)).stem}"
    if args.precision != "fp32":
        stem += f"_{args.precision}"
    write_report(report, out_dir / f"{stem}.json", out_dir / f"{stem}.md")
    print(markdown_table(report))
    return 0


def cmd_models(args):
    for name in available_models():
        print(name)
    return 0


def cmd_quantize(args):
    spec = load_spec(args.spec, args.data_root)
    bundle = load_bundle(args.model)
    images, ids = calibration_images(spec, args.images, args.seed)
    int8 = calibrate_bundle(bundle, images, {"spec": spec.name, "image_ids": ids, "seed": args.seed,
                                             "source": str(args.model)})
    save_bundle(int8, args.out)
    size = Path(args.out).stat().st_size
    print(f"int8 bundle written: {args.out} ({size / 2 ** 20:.1f} MB), calibrated on {len(ids)} {spec.name} "
          f"training images; predict with --model {args.out} --precision int8")
    return 0


COMMANDS = {"predict": cmd_predict, "quantize": cmd_quantize, "flops": cmd_flops, "models": cmd_models, "train": cmd_train, "evaluate": cmd_evaluate}


def main(argv=None):
    """Run the command line with ``argv`` (default sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    configure_logging(debug, quiet="--quiet" in argv)
    restore = _terminate_as_interrupt()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, IterSegError) as exc:
        if debug:
            traceback.print_exc()
        print(f"iterseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iterseg: interrupted; finished outputs are kept, none is half-written.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into exit code 1
        if debug:
            traceback.print_exc()
        print(f"iterseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return 1
    finally:
        restore()


class _Formatter(logging.Formatter):
    def format(self, record):
        return f"iterseg: {record.levelname.lower()}: {record.getMessage()}"


def configure_logging(debug=False, quiet=False):
    """Log records of the ``iterseg`` loggers go to stderr as 'iterseg: level: message': warnings
    and errors by default, errors only with --quiet, everything with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO)
    log.propagate = False


def _terminate_as_interrupt():
    """Make SIGTERM (a scheduler stopping the job) unwind like Ctrl-C, so the temporary files of
    unfinished outputs are removed; returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run():
    """Console-script entry point."""
    sys.exit(main())
