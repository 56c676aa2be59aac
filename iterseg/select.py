"""Select: score a grid of windows over the stage-1 probabilities and pick the least certain.

Glossary
    probs    float32 (K, H, W) probabilities; K = 1 holds the foreground probability of a binary model
    windows  int64 (N, 4) of (y, x, h, w) in full-resolution pixels, in selection order
    scores   float64 (N,) the chosen windows' scores (meaning depends on the score function)
Score functions (each over a window's pixels):
    mean         |mean(p) - 0.5|            lower = less certain   (binary; the paper's criterion)
    uncertainty  mean of 1 - 2|p - 0.5|     higher = less certain  (binary; 1 - margin for K > 2)
    margin       mean of top-1 - top-2 prob lower = less certain   (default for K > 2)
Ties go to the lowest window index (row-major over the grid), so the choice is deterministic.
"""
import math

import numpy as np

from .kernels import grid_windows, lowest_k, margin_map, uncertainty_map, window_means

SCORES = ("mean", "uncertainty", "margin")


def default_score(num_channels):
    """'mean' for a binary model (one probability channel), 'margin' for K > 2 classes."""
    return "mean" if num_channels == 1 else "margin"


def default_patch_size(height, width, patches, multiple):
    """ceil(max(H, W) / patches) rounded up to ``multiple``: an N_p x N_p grid on a square image."""
    side = math.ceil(max(height, width) / max(patches, 1))
    return -(-side // multiple) * multiple


def window_scores(probs, size, stride, score):
    """(score of each grid window float64 (n_rows, n_cols), priority: the lowest are refined first)."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}.")
    binary = probs.shape[0] == 1
    if score == "mean":
        if not binary:
            raise ValueError("score 'mean' needs a binary model; use 'margin' or 'uncertainty'.")
        scores = np.abs(window_means(probs[0], size, stride) - 0.5)
        return scores, scores
    if binary:
        certainty = 1.0 - uncertainty_map(probs[0])  # = |2p - 1|, the binary margin
    else:
        certainty = margin_map(probs)
    margins = window_means(certainty, size, stride)
    if score == "margin":
        return margins, margins
    return 1.0 - margins, margins


def select_windows(probs, patches, size, stride=None, score="mean"):
    """The ``patches`` least certain windows: (windows int64 (N, 4), scores float64 (N,)),
    N = min(patches, number of grid windows)."""
    scores, priority = window_scores(probs, size, stride, score)
    chosen = lowest_k(priority.ravel(), patches)
    windows = grid_windows(probs.shape[1], probs.shape[2], size, stride)[chosen]
    return windows, scores.ravel()[chosen]
