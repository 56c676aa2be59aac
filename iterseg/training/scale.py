"""Stage 1's scale and width for a new dataset, read off its training masks.

A structure narrower than 1 / s1_scale pixels vanishes from the stage-1 image: a vessel two pixels wide
is a quarter of a pixel at 1/8. What stage 1 can at best draw is the mask shrunk to its scale and grown
back, so the scale is the smallest whose round trip keeps the masks: the first of S1_SCALES where the
mean Dice of up(down(mask)) against the mask reaches KEEP (measured on the shipped sets' training masks:
PH2 lesions 0.997 at 1/8; DRIVE vessels 0.48 at 1/8, 0.79 at 1/4, 0.91 at 1/2; HRF vessels 0.86, 0.95,
0.99), else full resolution (scale 1), where nothing vanishes. KEEP is high because what stage 1 cannot
draw, stage 2 must redraw window by window, and thin structures run everywhere: DRIVE's stage 1 at 1/2
(round trip 0.91) kept 95.7 % of the baseline's test Dice at 6.5 % of its MACs; at full resolution,
width 4 (the same MACs) 98.9 % and width 6 (14 %) 99.7 % (benchmarks/results/eval26).
The width keeps a shrunk stage 1 at 1/16 of a width-16 stage 2 or less: 16 up to 1/4, 8 at 1/2 (a
U-Net's MACs grow with the pixels and with the square of the width). At full resolution stage 1 draws
every thin structure itself, so it gets width 6: (6/16)^2 = 14 % of the MACs, which leaves 11 % of
training/defaults.py's 25 % budget for windows.

Glossary
    target   (H, W) binary (0/1, 255 unlabelled) or (H, W, K) one-hot float32, as training_target makes
"""
import cv2
import numpy as np

S1_SCALES = (0.125, 0.25, 0.5, 1.0)
KEEP = 0.97
FULL_WIDTH = 16
FULL_WIDTH_S1 = 6  # stage 1's width at full resolution


def roundtrip_dice(target, scale):
    """Mean Dice, over the foreground classes, of a mask shrunk by ``scale`` (INTER_AREA, as stage 1's
    input) and grown back (bilinear, as the coarse map) against the mask; NaN for an empty mask."""
    planes = [target == 1] if target.ndim == 2 else [target[..., k] > 0.5 for k in range(1, target.shape[2])]
    height, width = target.shape[:2]
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    dices = []
    for plane in planes:
        if not plane.any():
            continue
        shrunk = cv2.resize(plane.astype(np.float32), small, interpolation=cv2.INTER_AREA)
        back = cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
        dices.append(2 * (back & plane).sum() / (back.sum() + plane.sum()))
    return float(np.mean(dices)) if dices else float("nan")


def choose_s1_scale(targets):
    """The smallest of S1_SCALES whose mask round trip keeps a mean Dice >= KEEP over ``targets``
    (full resolution, where the round trip is exact, when no smaller one does); ``targets``: the
    training masks (see the glossary)."""
    for scale in S1_SCALES:
        dices = [d for d in (roundtrip_dice(t, scale) for t in targets) if np.isfinite(d)]
        if not dices or np.mean(dices) >= KEEP:
            return scale
    return S1_SCALES[-1]


def s1_width(scale):
    """Stage 1's width at ``scale``: FULL_WIDTH up to 1/4, half of it at 1/2 (cost <= 1/16 of a
    FULL_WIDTH stage 2), FULL_WIDTH_S1 at full resolution (14 %, see the module docstring)."""
    if scale >= 1:
        return FULL_WIDTH_S1
    return FULL_WIDTH if scale <= 0.25 else FULL_WIDTH // 2
