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
    parser.add_argument("--check-images", type=int_at_least(0), default=4, metavar="N",
                        help="test images on which OpenVINO's int8 is checked against the float model "
                             "(default 4; 0 skips the check): a bundle whose int8 loses more than 0.005 Dice "
                             "there runs int8 on PyTorch's kernels unless --backend openvino is asked")
    parser.add_argument("--out", required=True, metavar="FILE", help="the int8 bundle to write")
    return parser


def run(args):
    import dataclasses

    from ..model import openvino_backend
    from ..model.runtime import INT8_DICE_LIMIT
    from ..model.store import load_bundle, save_bundle
    from ..training.calibrate import calibrate_bundle, calibration_images, check_openvino_int8
    from ..training.data import load_spec

    spec = load_spec(args.spec, args.data_root)
    model = chosen_model(args)
    images, ids = calibration_images(spec, args.images, args.seed)
    source = load_bundle(model)
    int8 = calibrate_bundle(source, images,
                            {"spec": spec.name, "image_ids": ids, "seed": args.seed, "source": str(model)})
    verdict = "not checked (--check-images 0)"
    if not openvino_backend.installed():
        verdict = "not checked: OpenVINO is not installed, so int8 runs on PyTorch's kernels"
    elif args.check_images and not spec.split("test"):
        verdict = f"not checked: spec {spec.name} has no test images"
    elif args.check_images:
        check = check_openvino_int8(source, int8, spec, args.check_images)
        int8 = dataclasses.replace(int8, provenance={**int8.provenance, "int8": {
            **int8.provenance["int8"], "openvino_check": check}})
        verdict = (f"OpenVINO int8 {'kept' if check['loss'] <= INT8_DICE_LIMIT else 'LOST'} "
                   f"{check['quality']} on {check['images']} {spec.name} test images: "
                   + ", ".join(f"{m} {check['float'][m]:.4f} -> {check['int8'][m]:.4f}" for m in check["float"])
                   + (f" (a loss over {INT8_DICE_LIMIT}: --precision int8 runs on PyTorch's kernels)"
                      if check["loss"] > INT8_DICE_LIMIT else ""))
    save_bundle(int8, args.out)
    megabytes = Path(args.out).stat().st_size / 2 ** 20
    print(f"int8 bundle written: {args.out} ({megabytes:.1f} MB), calibrated on {len(ids)} {spec.name} "
          f"training images; predict with --model {args.out} --precision int8\n{verdict}")
    return 0
