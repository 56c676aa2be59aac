"""``iterseg flops --size HxW``: the cost table of a two-stage run, without an image."""
from .options import add_geometry, check_settings, chosen_model, size

ROWS = ("stage1", "stage2", "total", "baseline")


def add_parser(subparsers):
    parser = subparsers.add_parser("flops", help="print the cost table for an image size, without an image")
    parser.add_argument("--size", type=size, required=True, metavar="HxW", help="image size, e.g. 2048x2048")
    add_geometry(parser)
    return parser


def run(args):
    from ..api import planned_cost
    from ..model.store import load_bundle

    check_settings(args, ("patches", "patch_size", "context"))
    height, width = args.size
    bundle = load_bundle(chosen_model(args))  # counted, never run: no network is prepared
    plan, macs = planned_cost(bundle, height, width, args.patches, args.patch_size, args.context)
    patches = plan.settings.patches
    print(f"{height} x {width} image (H x W), model {bundle.name}, {patches} patches "
          f"({macs['convention']})")
    for key in ROWS:
        print(f"  {key:<9} {macs[key] / 1e9:12.3f} GMACs")
    print(f"  ratio     {100 * macs['ratio']:12.2f} %")
    if macs["uncounted_ops"]:
        print(f"  not counted by fvcore: {', '.join(macs['uncounted_ops'])}")
    return 0
