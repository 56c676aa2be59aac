"""Plain NumPy twins of the numba kernels in ``windows.py`` and ``area.py``.

They are written for clarity, not speed, and the tests run every kernel against its twin.
Shapes and meaning are the same as in ``windows.py``.
"""
import numpy as np

from .grid import grid_starts


def window_means_reference(prob, size, stride=None):
    """Mean of ``prob`` (H, W) over each window of the grid, float64 (n_rows, n_cols)."""
    prob = np.asarray(prob)
    height, width = prob.shape
    ys = grid_starts(height, size, stride)
    xs = grid_starts(width, size, stride)
    win_h, win_w = min(size, height), min(size, width)
    means = np.empty((len(ys), len(xs)), dtype=np.float64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            means[i, j] = prob[y:y + win_h, x:x + win_w].astype(np.float64).mean()
    return means


def lowest_k_reference(values, k):
    """Indices (int64) of the k smallest of ``values`` (1-D), ascending; ties by lowest index, NaN last."""
    values = np.asarray(values).ravel()
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}.")
    return np.argsort(values, kind="stable")[:k].astype(np.int64)


def uncertainty_map_reference(prob):
    """Per-pixel uncertainty ``1 - 2|p - 0.5|`` (1 at p = 0.5, 0 at p = 0 or 1), float32 (H, W)."""
    prob = np.asarray(prob, dtype=np.float32)
    return (1.0 - 2.0 * np.abs(prob - 0.5)).astype(np.float32)


def margin_map_reference(probs):
    """Per-pixel margin top-1 minus top-2 of class probabilities ``probs`` (K, H, W), float32 (H, W)."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape[0] < 2:
        raise ValueError(f"margin needs at least 2 classes, got probabilities of shape {probs.shape}.")
    top2 = np.sort(probs, axis=0)[-2:]
    return (top2[1] - top2[0]).astype(np.float32)


def block_means_reference(pixels, fy, fx):
    """float32 (H // fy, W // fx, C) mean of each fy x fx block of ``pixels`` (H, W[, C])."""
    pixels = np.asarray(pixels, np.float64)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    height, width, channels = pixels.shape
    blocks = pixels.reshape(height // fy, fy, width // fx, fx, channels)
    return blocks.mean(axis=(1, 3)).astype(np.float32)
