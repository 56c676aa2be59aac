"""``iterseg models``: the embedded models, one line each (name, data, stage-1 scale, window side,
default window count, size)."""


def add_parser(subparsers):
    return subparsers.add_parser("models", help="list the embedded models and their defaults")


def run(args):
    from ..engine.settings import DEFAULT_PATCHES
    from ..model.store import WEIGHTS_DIR, available_models, load_bundle

    print(f"{'name':10s} {'data':8s} {'classes':8s} {'stage-1 scale':14s} {'window':8s} {'windows':8s} "
          f"{'size':>7s}")
    for name in available_models():
        bundle = load_bundle(name)
        path = WEIGHTS_DIR / f"{name}.pt"
        size = f"{path.stat().st_size / 2 ** 20:.1f} MB" if path.is_file() else "-"
        window = f"{bundle.window} px" if bundle.window else "N_p rule"
        count = str(DEFAULT_PATCHES) if bundle.patches is None else str(bundle.patches)
        print(f"{name:10s} {bundle.provenance.get('dataset', '-'):8s} {bundle.num_classes:<8d} "
              f"{bundle.s1_scale:<14g} {window:8s} {count:8s} {size:>7s}")
    return 0
