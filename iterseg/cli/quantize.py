"""``iterseg quantize``: calibrate an int8 copy of a model on a few training images of a data spec."""
import argparse
from pathlib import Path

from .options import add_model, add_spec, chosen_model, int_at_least

EPILOG = """example:
  iterseg quantize --model drive --spec drive --data-root ../shared/data --out drive-int8.pt
  iterseg predict image.png --model drive-int8.pt --precision int8"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "quantize", help="calibrate an int8 copy of a model on a few training images (for --precision int8)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(parser)
    add_spec(parser)
    parser.add_argument("--images", type=int_at_least(1), default=8,
                        help="training images to calibrate on (default 8, drawn with --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, metavar="FILE", help="the int8 bundle to write")
    return parser


def run(args):
    from ..model.store import load_bundle, save_bundle
    from ..training.calibrate import calibrate_bundle, calibration_images
    from ..training.data import load_spec

    spec = load_spec(args.spec, args.data_root)
    model = chosen_model(args)
    images, ids = calibration_images(spec, args.images, args.seed)
    int8 = calibrate_bundle(load_bundle(model), images,
                            {"spec": spec.name, "image_ids": ids, "seed": args.seed, "source": str(model)})
    save_bundle(int8, args.out)
    megabytes = Path(args.out).stat().st_size / 2 ** 20
    print(f"int8 bundle written: {args.out} ({megabytes:.1f} MB), calibrated on {len(ids)} {spec.name} "
          f"training images; predict with --model {args.out} --precision int8")
    return 0
