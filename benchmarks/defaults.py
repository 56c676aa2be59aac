"""A bundle's defaults measured on its own validation images and written into the bundle: the context
stage 2 sees around a window and the window count ``predict`` refines (iterseg/training/defaults.py
states both rules; the training recipe applies them when it assembles a bundle).

    python -m benchmarks.defaults iterseg/weights/drive.pt --spec drive --data-root ../shared/data
    python -m benchmarks.defaults iterseg/weights/drive.pt --test-report benchmarks/results/eval26/drive_test_drive.json

The validation images are those the bundle's stage 2 was validated on (``provenance``'s val_ids),
never the test split. ``--test-report`` instead records what an ``iterseg evaluate`` report of the test
split measured at the bundle's default (the model card's test Dice); it chooses nothing.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

from iterseg.errors import IterSegError
from iterseg.model.store import read_bundle, save_bundle
from iterseg.training.assemble import write_defaults
from iterseg.training.data import load_spec


def record_test(bundle_path, report_path):
    """Write into the bundle the test split's Dice, share of the baseline's and MACs ratio at its default
    window count, from an ``iterseg evaluate`` JSON report that measured that count; returns them."""
    bundle = read_bundle(bundle_path)
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    row = report["summary"]["s1" if not bundle.patches else f"np={bundle.patches}"]
    if report["options"].get("context", bundle.context or 0) != (bundle.context or 0):
        raise ValueError(f"{report_path} measured another context than the bundle's {bundle.context}")
    tested = {"dice": round(row["dice"], 4), "of_baseline": round(row["dice_vs_baseline"], 4),
              "macs_ratio": round(row["macs_ratio"], 4), "report": Path(report_path).name}
    save_bundle(dataclasses.replace(bundle, provenance={**bundle.provenance, "test": tested}), bundle_path)
    return tested


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defaults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="the bundle file to measure and update")
    parser.add_argument("--spec", help="the data spec the bundle was trained on (to measure its defaults)")
    parser.add_argument("--test-report", type=Path, help="an `iterseg evaluate` JSON of the test split: record it")
    parser.add_argument("--data-root", default=None, help="folder the spec's paths are relative to")
    args = parser.parse_args(argv)
    try:
        if args.test_report:
            chosen = record_test(args.bundle, args.test_report)
        elif args.spec:
            chosen = write_defaults(read_bundle(args.bundle), load_spec(args.spec, args.data_root), args.bundle)
        else:
            raise ValueError("pass --spec to measure the defaults or --test-report to record a test report")
    except (IterSegError, OSError, KeyError, ValueError) as exc:
        print(f"defaults: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.bundle}: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
