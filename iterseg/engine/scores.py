"""Scores: how much a window needs refining. One convention for all: higher = refine first.

A score is the mean over the window's pixels of a per-pixel *plane* computed from the merged
probabilities, then turned into the window's score (all in [0, 1]):
    mean         1 - 2 |mean(p) - 0.5|   the paper's |mean(p) - 0.5|, flipped to the convention (binary only)
    uncertainty  mean of 1 - 2 |p - 0.5| for a binary model, mean of 1 - (top-1 - top-2 probability)
                 for K > 2 classes (the default there; older versions called it 'margin')
Ties go to the lowest window index (row-major over the grid).

Glossary
    probs    float32 (K, h, w) probabilities (never logits); K = 1 holds a binary model's foreground
    plane    float32 (h, w) per-pixel value averaged over each window
    scores   float64 (n_rows, n_cols) one per window of the grid
"""
import numpy as np

from ..kernels import margin_map, uncertainty_map, window_means_by_rows

SCORES = ("mean", "uncertainty")


def default_score(channels):
    """'mean' for a binary model (``channels``, its output channels, = 1), 'uncertainty' for K > 2
    classes (K channels)."""
    return "mean" if channels == 1 else "uncertainty"


def score_plane(probs, score):
    """The per-pixel plane of ``score`` for probabilities (K, h, w): float32 (h, w)."""
    if score == "mean":
        return probs[0]
    if probs.shape[0] == 1:
        return uncertainty_map(probs[0])
    return 1.0 - margin_map(probs)


def window_scores(region, shape, size, stride, score, strip_rows=512):
    """Scores float64 (n_rows, n_cols) of every window of the grid over an H x W merged map.

    region(top, bottom) returns the merged probabilities of rows top .. bottom-1: float32 (K, r, W).
    The map is visited a strip of rows at a time, so it never needs to exist whole.
    """
    means = window_means_by_rows(lambda top, bottom: score_plane(region(top, bottom), score),
                                 shape, size, stride, strip_rows)
    return 1.0 - 2.0 * np.abs(means - 0.5) if score == "mean" else means
