"""The FLOP/Dice sweep: two-stage against its reference points on the test split of a data spec.

    python -m benchmarks.sweep --spec hrf --model hrf --data-root ../shared/data

Methods, all on the same images, MACs counted as in the reports (fvcore, 1 MAC = 1 flop):
    baseline         the full-resolution model (S2) over the whole image: MACs ratio 1
    two-stage/mean   N_p windows of a fixed grid refined, chosen by 1 - 2|mean(p) - 0.5| (N_p = 0: S1 only)
    two-stage/uncertainty   the same, chosen by mean uncertainty
    random           the same number of windows of the same grid, chosen at random (seeded)
    oracle           the same number of windows of the same grid where stage 1 is most wrong (most
                     pixels whose upsampled stage-1 class differs from the ground truth, inside the
                     field of view): the best any selector could choose, at equal cost
    downscale        S2 on the image downscaled (INTER_AREA) so that its MACs do not exceed the
                     two-stage MACs at that N_p, probabilities upsampled (bilinear): equal cost
    iterative/R2, iterative/R3   the same N_p windows chosen in 2 or 3 rounds, re-scoring the
                     refined map between rounds (score mean): equal cost
    sliding/half     the same N_p windows chosen from candidates at half the window's step with
                     non-maximum suppression (overlap <= 0.25), results blended: equal cost
    sliding/half-R3  the same, chosen in 3 rounds (overlapping candidates are re-scored)
    conditioned/mean the same N_p windows (score mean) refined by the bundle's conditioned S2, which
                     also sees the stage-1 probabilities (about 0.3 % more MACs per window)
    conditioned/random  the random windows above refined by the conditioned S2: the shipped model's
                     selection against chance
    previous/mean    with --previous FILE (a bundle with the same S2 and another stage 1, e.g. the
                     paper's 1/8 one): its two-stage/mean at every N_p, so both stage 1s share a plot
    conditioned/baseline   the conditioned bundle's own baseline: stage 1, then its conditioned S2
                     over the whole image (or its reference network, if it keeps one)
With a conditioned model every other method runs the unconditioned bundle it was fine-tuned from:
--unconditioned FILE, else the model's reference network as S2 (Bundle.unconditioned). Those curves
are then that bundle's, and every MACs ratio is against its baseline (the unconditioned S2).
With --precisions fp32,bf16 the baseline and two-stage/mean also run in bf16. --groups picks which
methods run (core: everything above but the iterative and sliding ones) and --merge adds them to an
existing result file instead of starting it anew.
The window side is fixed per image, that of a G x G grid (--grid, default 16), so the cost grows
with N_p as in the source paper's Figure 2. Writes <out>/<dataset>.json, .md and .png.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import iterseg
from iterseg.disk.outputs import atomic_output
from iterseg.engine.coarse import CoarseMap
from iterseg.engine.cost import baseline_macs, count_macs, stage1_size
from iterseg.engine.infer import run_whole
from iterseg.engine.settings import default_window_side
from iterseg.engine.source import ArraySource, gather_boxes
from iterseg.kernels import grid_windows, lowest_k, window_means
from iterseg.model.store import load_bundle
from iterseg.training.data import load_spec, read_sample
from iterseg.training.evaluate import METRICS
from iterseg.training.metrics import scores

from .timing import machine

PATCHES = (0, 1, 2, 4, 8, 16, 32, 64, 128)
RESULTS = Path(__file__).parent / "results"


def downscale_scale(config, height, width, max_macs):
    """The largest scale (to 0.1 %) at which S2 on the resized image costs at most ``max_macs``."""
    scale = min(1.0, math.sqrt(max_macs / count_macs(config, height, width)))
    while scale > 1e-3 and count_macs(config, max(1, round(height * scale)), max(1, round(width * scale))) > max_macs:
        scale *= 0.999
    return scale


def run_downscaled(seg, image, max_macs, precision):
    """(mask, MACs ratio, seconds) of S2 on the downscaled image, upsampled back."""
    start = time.perf_counter()
    bundle = seg.bundle
    source = ArraySource(image, bundle.in_channels)
    height, width = source.shape
    s2 = bundle.baseline_runner(precision)  # the full-resolution model of the baseline
    scale = downscale_scale(s2.config, height, width, max_macs)
    small = stage1_size((height, width), scale)
    view = source.view(*small)[0]  # run whole (never in chunks, whose context would cost more MACs)
    probs = CoarseMap(run_whole(s2, lambda boxes: gather_boxes(view, boxes), small, bundle.mean, bundle.std)[0],
                      (height, width)).full()
    mask = probs[0] >= 0.5 if probs.shape[0] == 1 else probs.argmax(axis=0) > 0
    ratio = count_macs(s2.config, *small) / count_macs(s2.config, height, width)
    return mask, ratio, time.perf_counter() - start


def random_windows(height, width, size, count, seed):
    """``count`` distinct windows of the size-``size`` grid, drawn with ``seed``."""
    grid = grid_windows(height, width, size)
    pick = np.random.default_rng(seed).choice(len(grid), min(count, len(grid)), replace=False)
    return grid[np.sort(pick)]


def oracle_windows(stage1_mask, target, fov, size, count):
    """The ``count`` windows of the size-``size`` grid with the most pixels that stage 1 gets wrong
    (``stage1_mask`` (H, W) class ids against ``target``, inside ``fov``), most wrong first."""
    wrong = (stage1_mask > 0) != (target > 0)
    if fov is not None:
        wrong &= fov
    errors = window_means(wrong.astype(np.float32), size)
    return grid_windows(*stage1_mask.shape, size)[lowest_k(-errors.ravel(), count)]


def _row(sample_id, method, precision, patches, mask, target, fov, ratio, seconds):
    return {"image": sample_id, "method": method, "precision": precision, "patches": patches,
            **scores(mask > 0, target, fov), "macs_ratio": ratio, "seconds": seconds}


BUDGETS = (0.05, 0.5)  # MACs ratios between which two-stage must beat downscaling and random windows (issue 26)
GROUPS = ("core", "iterative", "sliding", "conditioned", "previous")
DEFAULT_GROUPS = ("core", "iterative", "sliding")
BEYOND_ONE_SHOT = ("iterative/R2", "iterative/R3", "sliding/half", "sliding/half-R3", "conditioned/mean")


def group_of(method):
    return method.split("/")[0] if method.split("/")[0] in GROUPS else "core"


def sweep_image(seg, index, sample_id, image, target, fov, args, conditioned=None, previous=None):
    """Every method of the chosen groups at every N_p on one image: a list of rows."""
    height, width = image.shape[:2]
    size = default_window_side((height, width), args.grid, seg.bundle.s2.config.size_multiple)
    base_macs = baseline_macs(seg.bundle, (height, width))  # the denominator of every row's MACs ratio
    rows = []

    def add(method, precision, n, result):
        rows.append(_row(sample_id, method, precision, n, result.mask, target, fov,
                         result.macs["total"] / base_macs, result.seconds["total"]))

    if "core" in args.groups:
        core_methods(seg, image, size, args, add)
        stage1_mask = seg.predict(image, patches=0).mask
        for n in args.patches:
            macs = next(r for r in rows if r["method"] == "two-stage/mean" and r["patches"] == n
                        and r["precision"] == "fp32")["macs_ratio"] * base_macs
            mask, ratio, seconds = run_downscaled(seg, image, macs, "fp32")
            rows.append(_row(sample_id, "downscale", "fp32", n, mask, target, fov, ratio, seconds))
            if n:
                windows = random_windows(height, width, size, n, seed=(args.seed, index, n))
                add("random", "fp32", n, seg.predict(image, windows=windows, precision="fp32"))
                windows = oracle_windows(stage1_mask, target, fov, size, n)
                add("oracle", "fp32", n, seg.predict(image, windows=windows, precision="fp32"))
    if "conditioned" in args.groups:
        add("conditioned/baseline", "fp32", None, conditioned.predict_baseline(image))
    if previous is not None:
        for n in args.patches:
            add("previous/mean", "fp32", n, previous.predict(image, patches=n, patch_size=size, score="mean"))
    for n in (n for n in args.patches if n):
        if "iterative" in args.groups:
            for rounds in (2, 3):
                add(f"iterative/R{rounds}", "fp32", n, seg.predict(image, patches=n, patch_size=size, rounds=rounds))
        if "sliding" in args.groups:
            add("sliding/half", "fp32", n, seg.predict(image, patches=n, patch_size=size, stride=size // 2))
            add("sliding/half-R3", "fp32", n, seg.predict(image, patches=n, patch_size=size, stride=size // 2,
                                                          rounds=3))
        if "conditioned" in args.groups:
            add("conditioned/mean", "fp32", n, conditioned.predict(image, patches=n, patch_size=size, score="mean"))
            windows = random_windows(height, width, size, n, seed=(args.seed, index, n))
            add("conditioned/random", "fp32", n, conditioned.predict(image, windows=windows, precision="fp32"))
    return rows


def core_methods(seg, image, size, args, add):
    """The baseline and two-stage with both scores (and bf16), at every N_p."""
    for precision in args.precisions:
        add("baseline", precision, None, seg.predict_baseline(image, precision=precision))
        for score in ("mean", "uncertainty") if precision == "fp32" else ("mean",):
            for n in args.patches:
                result = seg.predict(image, patches=n, patch_size=size, score=score, precision=precision)
                add(f"two-stage/{score}", precision, n, result)


def summarise(rows):
    """Mean metrics, MACs ratio and seconds per (method, precision, N_p), in first-seen order."""
    groups = {}
    for row in rows:
        groups.setdefault((row["method"], row["precision"], row["patches"]), []).append(row)
    return [{"method": m, "precision": p, "patches": n, "images": len(g),
             **{k: float(np.mean([r[k] for r in g])) for k in METRICS + ("macs_ratio", "seconds")}}
            for (m, p, n), g in groups.items()]


def _point(summary, method, patches=None, precision="fp32"):
    return next((s for s in summary if s["method"] == method and s["patches"] == patches
                 and s["precision"] == precision), None)


def findings(summary, patches):
    """The issue's targets read off the summary: comparisons at each N_p, 99 % of baseline, bf16."""
    base = _point(summary, "baseline")
    out = {"baseline_dice": base["dice"], "per_patches": []}
    for n in patches:
        ours = _point(summary, "two-stage/mean", n)
        entry = {"patches": n, "dice": ours["dice"], "macs_ratio": ours["macs_ratio"],
                 "dice_vs_baseline": ours["dice"] / base["dice"] if base["dice"] else float("nan"),
                 "minus_downscale": ours["dice"] - _point(summary, "downscale", n)["dice"]}
        if n:
            entry["minus_random"] = ours["dice"] - _point(summary, "random", n)["dice"]
            oracle = _point(summary, "oracle", n)
            if oracle:  # how far the selector is from the best choice of windows at the same cost
                entry["oracle_dice"] = oracle["dice"]
                entry["minus_oracle"] = ours["dice"] - oracle["dice"]
        for method in BEYOND_ONE_SHOT:
            other = _point(summary, method, n)
            if n and other:  # same N_p windows of the same side: the same MACs (conditioned: +0.3 %)
                entry[f"{method} minus one-shot"] = other["dice"] - ours["dice"]
                if method == "conditioned/mean":
                    entry["conditioned_macs_ratio"] = other["macs_ratio"]
        chance, chosen = _point(summary, "conditioned/random", n), _point(summary, "conditioned/mean", n)
        if n and chance and chosen:
            entry["conditioned_minus_random"] = chosen["dice"] - chance["dice"]
        out["per_patches"].append(entry)
    conditioned_base = _point(summary, "conditioned/baseline")
    if conditioned_base:
        out["conditioned_baseline"] = {"dice": conditioned_base["dice"], "macs_ratio": conditioned_base["macs_ratio"]}
    reaching = [e["patches"] for e in out["per_patches"] if e["dice_vs_baseline"] >= 0.99]
    out["smallest_patches_at_99pct_of_baseline"] = min(reaching) if reaching else None
    out["beats_downscale_at_every_np"] = all(e["minus_downscale"] > 0 for e in out["per_patches"])
    out["beats_random_at_every_np"] = all(e.get("minus_random", 1) > 0 for e in out["per_patches"])
    budget = [e for e in out["per_patches"] if BUDGETS[0] <= e["macs_ratio"] <= BUDGETS[1]]
    out["budgets"] = {"range": list(BUDGETS), "patches": [e["patches"] for e in budget],
                      "beats_downscale": all(e["minus_downscale"] > 0 for e in budget),
                      "beats_random": all(e.get("minus_random", 1) > 0 for e in budget),
                      "conditioned_beats_random": all(e.get("conditioned_minus_random", 1) > 0 for e in budget)}
    out["bf16"] = bf16_findings(summary, patches)
    return out


def bf16_findings(summary, patches):
    """Dice change and speed-up of bf16 against fp32 for the baseline and two-stage/mean."""
    pairs = [("baseline", None)] + [("two-stage/mean", n) for n in patches]
    result = []
    for method, n in pairs:
        fp32, bf16 = _point(summary, method, n), _point(summary, method, n, "bf16")
        if bf16:
            result.append({"method": method, "patches": n, "dice_change": bf16["dice"] - fp32["dice"],
                           "speedup": fp32["seconds"] / max(bf16["seconds"], 1e-9)})
    return result


def markdown(report):
    """The summary as a Markdown table plus the findings in one line each."""
    lines = [f"{report['dataset']}: {report['split']} split, {report['images']} images, model "
             f"{report['model']}, {report['grid']}x{report['grid']} window grid", "",
             "| method | precision | N_p | Dice | IoU | boundary F1 | MACs ratio | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for s in report["summary"]:
        n = "" if s["patches"] is None else s["patches"]
        lines.append(f"| {s['method']} | {s['precision']} | {n} | {s['dice']:.4f} | {s['iou']:.4f} | "
                     f"{s['boundary_f1']:.4f} | {100 * s['macs_ratio']:.2f} % | {s['seconds']:.3f} |")
    f = report["findings"]
    lines += ["", f"- smallest N_p with Dice >= 99 % of the baseline's: {f['smallest_patches_at_99pct_of_baseline']}",
              f"- two-stage/mean beats equal-cost downscaling at every N_p: {f['beats_downscale_at_every_np']}",
              f"- two-stage/mean beats random windows at every N_p: {f['beats_random_at_every_np']}"]
    if "budgets" in f:
        b = f["budgets"]
        lines.append(f"- at {100 * b['range'][0]:.0f}-{100 * b['range'][1]:.0f} % of the baseline's MACs (N_p "
                     f"{b['patches']}): beats downscaling {b['beats_downscale']}, random windows {b['beats_random']}"
                     + (f", conditioned beats its random windows {b['conditioned_beats_random']}"
                        if any("conditioned_minus_random" in e for e in f["per_patches"]) else ""))
    chance = [(e["patches"], e["conditioned_minus_random"]) for e in f["per_patches"]
              if "conditioned_minus_random" in e]
    if chance:
        lines.append("- conditioned/mean minus conditioned/random, Dice by N_p: "
                     + ", ".join(f"{n}: {g:+.4f}" for n, g in chance))
    if "conditioned_baseline" in f:
        lines.append(f"- conditioned baseline (the conditioned bundle's own, over the whole image): Dice "
                     f"{f['conditioned_baseline']['dice']:.4f} against {f['baseline_dice']:.4f}, at "
                     f"{100 * f['conditioned_baseline']['macs_ratio']:.2f} % of the baseline's MACs")
    gaps = [(e["patches"], e["minus_oracle"]) for e in f["per_patches"] if "minus_oracle" in e]
    if gaps:
        lines.append("- two-stage/mean minus the oracle's windows, Dice by N_p: "
                     + ", ".join(f"{n}: {g:+.4f}" for n, g in gaps))
    for method in BEYOND_ONE_SHOT:
        gains = [(e["patches"], e[f"{method} minus one-shot"]) for e in f["per_patches"]
                 if f"{method} minus one-shot" in e]
        if gains:
            cost = "(+0.3 % MACs per window)" if method == "conditioned/mean" else "at equal MACs"
            lines.append(f"- {method} minus one-shot Dice {cost}, by N_p: "
                         + ", ".join(f"{n}: {g:+.4f}" for n, g in gains))
    for b in f["bf16"]:
        lines.append(f"- bf16 vs fp32, {b['method']} N_p={b['patches']}: Dice {b['dice_change']:+.4f}, "
                     f"{b['speedup']:.2f}x faster")
    return "\n".join(lines)


def write_outputs(report, out_dir):
    """<dataset>.json, .md and .png in ``out_dir``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / report["dataset"]
    with atomic_output(stem.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    with atomic_output(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(report) + "\n", encoding="utf-8")
    from .plots import plot_sweep
    with atomic_output(stem.with_suffix(".png")) as tmp:
        plot_sweep(report, tmp)


def unconditioned_bundle(args, model):
    """The bundle every method but the conditioned group runs: --unconditioned, else ``model``'s
    bundle with its reference network as S2 (the bundle itself when it is not conditioned)."""
    if not args.unconditioned:
        found = model.bundle.unconditioned()
    else:
        found = load_bundle(args.unconditioned)
        if found.conditioned or not same_weights(found.s1, model.bundle.s1):
            raise iterseg.InputError(f"--unconditioned {args.unconditioned} must be an unconditioned bundle with the "
                                     f"same stage 1 as {args.model} (the bundle its S2 was fine-tuned from).")
    if found.conditioned:
        raise iterseg.InputError(f"{args.model} has a conditioned S2 and no reference network: pass --unconditioned "
                                 "FILE, the unconditioned bundle it was fine-tuned from, whose S2 the sweep's curves "
                                 "and baseline use (a sweep of the conditioned S2 alone is not implemented).")
    if "conditioned" in args.groups and not model.bundle.conditioned:
        raise iterseg.InputError(f"--groups conditioned needs a model with a conditioned S2; {args.model} has none")
    return found


def previous_bundle(args, bundle):
    """A Segmenter of --previous (None without it): a bundle with ``bundle``'s S2 and another stage 1."""
    if not args.previous:
        return None
    found = load_bundle(args.previous)
    if not same_weights(found.s2, bundle.s2):
        raise iterseg.InputError(f"--previous {args.previous} must have the same S2 as the swept model, so that "
                                 "only stage 1 differs between the curves.")
    return iterseg.Segmenter(found, source=args.previous)


def same_weights(a, b):
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def run_sweep(args):
    spec = load_spec(args.spec, args.data_root)
    conditioned = iterseg.load(args.model)
    seg = iterseg.Segmenter(unconditioned_bundle(args, conditioned), source=args.unconditioned or args.model)
    previous = previous_bundle(args, seg.bundle)
    samples = spec.split(args.split)[:args.limit]
    rows, started = kept_rows(args, spec.name), time.perf_counter()
    for index, sample in enumerate(samples):
        image, target, fov = read_sample(spec, sample)
        rows += sweep_image(seg, index, sample.id, image, target, fov, args, conditioned, previous)
        print(f"  [{index + 1}/{len(samples)}] {sample.id} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
    summary = summarise(sorted(rows, key=lambda r: METHOD_ORDER.index(group_of(r["method"]))))
    return {"dataset": spec.name, "spec": str(args.spec), "model": args.model,
            "unconditioned_model": args.unconditioned, "previous_model": args.previous, "split": args.split,
            "images": len(samples), "grid": args.grid, "patches": list(args.patches),
            "precisions": list(args.precisions), "seed": args.seed, "machine": machine(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": time.perf_counter() - started,
            "macs_convention": "fvcore: 1 multiply-accumulate = 1 flop",
            "summary": summary, "findings": findings(summary, args.patches), "rows": rows,
            "earlier_runs": earlier_runs(args, spec.name)}


METHOD_ORDER = list(GROUPS)


def kept_rows(args, dataset):
    """With --merge, the rows of the existing result file whose methods are not being rerun."""
    path = args.out / f"{dataset}.json"
    if not args.merge or not path.is_file():
        if args.merge and "core" not in args.groups:
            raise SystemExit(f"--merge without the core group needs {path} from an earlier run")
        return []
    return [row for row in json.loads(path.read_text())["rows"] if group_of(row["method"]) not in args.groups]


def earlier_runs(args, dataset):
    """With --merge: when and on what machine the kept rows were measured (their seconds are that
    machine's), as recorded in the existing result file."""
    path = args.out / f"{dataset}.json"
    if not args.merge or not path.is_file():
        return []
    previous = json.loads(path.read_text())
    kept = sorted({group_of(r["method"]) for r in previous["rows"]} - set(args.groups))
    return previous.get("earlier_runs", []) + [{"groups": kept, "created": previous["created"],
                                                "machine": previous["machine"]}]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="shipped spec name or YAML file")
    parser.add_argument("--model", required=True, help="embedded model name or bundle file")
    parser.add_argument("--data-root", default=None, help="folder of the datasets (default $ITERSEG_DATA)")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--patches", default=",".join(map(str, PATCHES)),
                        type=lambda t: tuple(int(v) for v in t.split(",")), help="comma-separated N_p values")
    parser.add_argument("--grid", type=int, default=16, help="window side = that of a GRID x GRID grid")
    parser.add_argument("--precisions", default="fp32,bf16", type=lambda t: tuple(t.split(",")),
                        help="fp32 first; bf16 adds the baseline and two-stage/mean in bf16")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random windows")
    parser.add_argument("--groups", default=",".join(DEFAULT_GROUPS), type=lambda t: tuple(t.split(",")),
                        help=f"which methods to run: {', '.join(GROUPS)} (default {','.join(DEFAULT_GROUPS)}; "
                             "conditioned needs a conditioned model and --unconditioned or its reference)")
    parser.add_argument("--unconditioned", default=None, metavar="FILE",
                        help="for a conditioned model: the unconditioned bundle its S2 was fine-tuned from, which "
                             "every method but the conditioned group runs (default: the model's reference network)")
    parser.add_argument("--previous", default=None, metavar="FILE",
                        help="a bundle with the same S2 and another stage 1: its two-stage/mean curve is added")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other groups' rows of the existing <out>/<dataset>.json")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.precisions[0] != "fp32" or 0 not in args.patches:
        parser.error("--precisions must start with fp32 and --patches must include 0 (stage 1 only)")
    if set(args.groups) - set(GROUPS):
        parser.error(f"--groups takes {', '.join(GROUPS)}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = run_sweep(args)
    except iterseg.IterSegError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    write_outputs(report, args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
