"""A bundle's defaults measured on its own validation images and written into the bundle: the context
stage 2 sees around a window and the window count ``predict`` refines (iterseg/training/defaults.py
states both rules; the training recipe applies them when it assembles a bundle).

    python -m benchmarks.defaults iterseg/weights/drive.pt --spec drive --data-root ../shared/data

The validation images are those the bundle's stage 2 was validated on (``provenance``'s val_ids),
never the test split.
"""
import argparse
import sys
from pathlib import Path

from iterseg.errors import IterSegError
from iterseg.model.store import read_bundle
from iterseg.training.assemble import write_defaults
from iterseg.training.data import load_spec


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defaults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="the bundle file to measure and update")
    parser.add_argument("--spec", required=True, help="the data spec the bundle was trained on")
    parser.add_argument("--data-root", default=None, help="folder the spec's paths are relative to")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec, args.data_root)
        chosen = write_defaults(read_bundle(args.bundle), spec, args.bundle)
    except (IterSegError, OSError, KeyError, ValueError) as exc:
        print(f"defaults: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.bundle}: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
