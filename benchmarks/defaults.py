"""A bundle's default window count, read off its FLOP/Dice sweep and written into the bundle.

    python -m benchmarks.defaults benchmarks/results/drive.json iterseg/weights/drive.pt

The rule (issue 15): the cheapest N_p whose Dice is >= 99 % of the baseline's; when no N_p gets there,
the N_p with the best Dice at <= 25 % of the baseline's MACs. The curve is the bundle's own: a
conditioned bundle's ``conditioned/mean`` against its conditioned baseline, else ``two-stage/mean``
against the baseline (the default score of a binary model). ``iterseg predict`` then refines that
many windows unless told, and says so in the report's notes.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

from iterseg.errors import IterSegError
from iterseg.model.store import read_bundle, save_bundle

KEEP = 0.99         # fraction of the baseline's Dice the default must keep
MAX_RATIO = 0.25    # when nothing keeps it: the best Dice at no more than this fraction of the MACs


def curve(summary):
    """(baseline Dice, [(N_p, Dice, MACs ratio)]) of the bundle's own curve in a sweep summary."""
    rows = [s for s in summary if s["precision"] == "fp32"]
    conditioned = [s for s in rows if s["method"] == "conditioned/mean"]
    method, base = ("conditioned/mean", "conditioned/baseline") if conditioned else ("two-stage/mean", "baseline")
    baseline = next(s["dice"] for s in rows if s["method"] == base)
    points = sorted((s["patches"], s["dice"], s["macs_ratio"]) for s in rows if s["method"] == method)
    return baseline, points


def choose(summary):
    """{"patches", "dice", "of_baseline", "macs_ratio", "rule"} by the rule of this module."""
    baseline, points = curve(summary)
    keeping = [p for p in points if p[1] >= KEEP * baseline]
    if keeping:
        patches, dice, ratio = min(keeping, key=lambda p: p[2])
        rule = f"cheapest N_p keeping >= {KEEP:.0%} of the baseline's Dice"
    else:
        patches, dice, ratio = max((p for p in points if p[2] <= MAX_RATIO), key=lambda p: p[1])
        rule = f"no N_p keeps {KEEP:.0%} of the baseline's Dice: the best Dice at <= {MAX_RATIO:.0%} of its MACs"
    return {"patches": int(patches), "dice": round(dice, 4), "of_baseline": round(dice / baseline, 4),
            "macs_ratio": round(ratio, 4), "rule": rule}


def measured(choice, sweep_path):
    """One line for the report's notes: what the sweep measured at the default."""
    return (f"{choice['of_baseline']:.1%} of the baseline's Dice at {choice['macs_ratio']:.1%} of its MACs "
            f"in {Path(sweep_path).name}")


def write_default(sweep_path, bundle_path):
    """Set ``patches`` and ``provenance["default"]`` of the bundle file from the sweep; returns the choice."""
    report = json.loads(Path(sweep_path).read_text(encoding="utf-8"))
    choice = choose(report["summary"])
    bundle = read_bundle(bundle_path)
    provenance = {**bundle.provenance, "default": {**choice, "measured": measured(choice, sweep_path),
                                                   "sweep": Path(sweep_path).name}}
    save_bundle(dataclasses.replace(bundle, patches=choice["patches"], provenance=provenance), bundle_path)
    return choice


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defaults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep's JSON result (python -m benchmarks.sweep)")
    parser.add_argument("bundle", type=Path, help="the bundle file the sweep measured")
    args = parser.parse_args(argv)
    try:
        choice = write_default(args.sweep, args.bundle)
    except (IterSegError, OSError, KeyError, StopIteration, ValueError) as exc:
        print(f"defaults: error: {exc!r}; pass a sweep JSON of this bundle and the bundle file.", file=sys.stderr)
        return 2
    print(f"{args.bundle}: {choice['patches']} windows by default ({choice['rule']}: Dice {choice['dice']}, "
          f"{choice['of_baseline']:.1%} of the baseline's, at {choice['macs_ratio']:.1%} of its MACs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
