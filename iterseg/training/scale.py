"""Stage 1's scale and width for a new dataset, read off its training masks.

A structure narrower than 1 / s1_scale pixels vanishes from the stage-1 image: a vessel two pixels wide
is a quarter of a pixel at 1/8. What stage 1 can at best draw is the mask shrunk to its scale and grown
back, so the scale is the smallest whose round trip keeps the masks: the first of S1_SCALES where the
mean Dice of up(down(mask)) against the mask reaches KEEP (measured on the shipped sets: PH2 lesions
0.997 at 1/8; DRIVE vessels 0.49 at 1/8, 0.81 at 1/4, 0.92 at 1/2; HRF vessels 0.87, 0.95, 0.99).
The width keeps stage 1 at 1/16 of a width-16 stage 2 or less: 16 up to 1/4, 8 at 1/2 (a quarter of the
pixels at a quarter of the channels' cost).

Glossary
    target   (H, W) binary (0/1, 255 unlabelled) or (H, W, K) one-hot float32, as training_target makes
"""
import cv2
import numpy as np

S1_SCALES = (0.125, 0.25, 0.5)
KEEP = 0.9
FULL_WIDTH = 16


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
    (the largest when none does); ``targets``: the training masks (see the glossary)."""
    for scale in S1_SCALES:
        dices = [d for d in (roundtrip_dice(t, scale) for t in targets) if np.isfinite(d)]
        if not dices or np.mean(dices) >= KEEP:
            return scale
    return S1_SCALES[-1]


def s1_width(scale):
    """Stage 1's width at ``scale``: FULL_WIDTH up to 1/4, half of it above (cost <= 1/16 of stage 2)."""
    return FULL_WIDTH if scale <= 0.25 else FULL_WIDTH // 2
