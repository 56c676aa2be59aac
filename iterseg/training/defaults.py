"""A bundle's defaults from its own validation images (never the test split): how much context stage 2
sees around a window, and how many windows ``predict`` refines.

Context. A U-Net's output near a window's border depends on pixels beyond it (the receptive radius,
107 px for depth 4, though most of the weight lies much closer), so a window refined without them is
wrong near its border, and refining more windows can lower Dice (issue 26); context costs MACs (a
48-px window with 16 px around it is an 80-px box). The bundle's context is the smallest of
0, 1, 2 and 4 size multiples at which the validation curve never falls by more than FALL as the
window count grows from 0 to every window (every window refined is stage 2 over the whole image,
engine/loop.refine_rounds); when none keeps it, the one whose curve falls least.

Window count (the rule of issue 15, bounded in cost): among the curve's points at <= MAX_RATIO of the
baseline's MACs, the cheapest whose Dice is >= KEEP of the baseline's; when none gets there, the best
Dice among them.

Glossary
    samples   (image, target, fov) triples as training/data.read_sample returns them
    curve     [(N_p, Dice, MACs ratio)] mean over the samples, N_p = 0 for stage 1 alone
"""
import numpy as np

from .metrics import dice

CONTEXT_MULTIPLES = (0, 1, 2, 4)
FALL = 0.002
KEEP = 0.99
MAX_RATIO = 0.25
COUNTS = (0, 1, 2, 4, 8, 16, 32, 64)
ALL_WINDOWS = 2 ** 20


def validation_curve(segmenter, samples, counts=COUNTS, **options):
    """The curve of ``segmenter`` (binary) on ``samples`` at the window ``counts``."""
    points = {n: ([], []) for n in counts}
    for image, target, fov in samples:
        for n in counts:
            result = segmenter.predict(image, patches=n, **options)
            points[n][0].append(dice(result.mask > 0, target, fov))
            points[n][1].append(result.macs["ratio"])
    return [(n, float(np.mean(d)), float(np.mean(r))) for n, (d, r) in points.items()]


def baseline_dice(segmenter, samples):
    """Mean Dice of the baseline (the full-resolution network over each image) on ``samples``."""
    return float(np.mean([dice(segmenter.predict_baseline(image).mask > 0, target, fov)
                          for image, target, fov in samples]))


def choose_patches(baseline, curve):
    """{"patches", "dice", "of_baseline", "macs_ratio", "rule"}: the window count by this module's rule."""
    affordable = [p for p in curve if p[2] <= MAX_RATIO] or [min(curve, key=lambda p: p[2])]
    keeping = [p for p in affordable if p[1] >= KEEP * baseline]
    if keeping:
        patches, value, ratio = min(keeping, key=lambda p: p[2])
        rule = f"cheapest N_p keeping >= {KEEP:.0%} of the baseline's Dice at <= {MAX_RATIO:.0%} of its MACs"
    else:
        patches, value, ratio = max(affordable, key=lambda p: p[1])
        rule = f"no N_p keeps {KEEP:.0%} of the baseline's Dice at <= {MAX_RATIO:.0%} of its MACs: the best Dice there"
    of_baseline = round(value / baseline, 4) if baseline > 0 else None
    return {"patches": int(patches), "dice": round(value, 4), "of_baseline": of_baseline,
            "macs_ratio": round(ratio, 4), "rule": rule}


def falls(curve, tolerance=0.002):
    """[(N_p before, N_p after, drop)] where Dice falls by more than ``tolerance`` as N_p grows along
    ``curve`` (sorted by N_p): refinement that lowers Dice."""
    curve = sorted(curve)
    best = curve[0] if curve else None
    drops = []
    for point in curve[1:]:
        if best[1] - point[1] > tolerance:
            drops.append((best[0], point[0], round(best[1] - point[1], 4)))
        if point[1] > best[1]:
            best = point
    return drops


def derive_defaults(segmenter, samples):
    """{"context", "patches", ...choose_patches, "curves"}: the bundle's defaults measured on
    ``samples`` (its validation images, binary bundles; multi-class ones keep the global defaults
    and context 0)."""
    if segmenter.bundle.num_classes != 2:
        return {"context": 0, "rule": "multi-class: global defaults"}
    multiple = segmenter.bundle.s2.config.size_multiple
    measured = {}  # context -> curve
    for context in [k * multiple for k in CONTEXT_MULTIPLES]:
        measured[context] = validation_curve(segmenter, samples, COUNTS + (ALL_WINDOWS,), context=context)
        if not falls(measured[context], FALL):
            break
    else:  # none keeps it: the context whose curve falls least
        context = min(measured, key=lambda c: max(drop for _, _, drop in falls(measured[c], FALL)))
    baseline, curve = baseline_dice(segmenter, samples), measured[context]
    return {"context": context, **choose_patches(baseline, [p for p in curve if p[0] != ALL_WINDOWS]),
            "baseline_dice": round(baseline, 4), "falls": falls(curve, FALL),
            "curves": {str(c): [[n, round(d, 4), round(r, 4)] for n, d, r in points]
                       for c, points in measured.items()}}
