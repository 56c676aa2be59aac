"""Numba kernels that score a grid of windows over a probability map and pick the least certain.

Glossary
    prob     float32 (H, W) foreground probabilities in [0, 1] (never logits)
    probs    float32 (K, H, W) class probabilities, K >= 2
    size     window side in pixels; stride: step between window starts (default: size)
    means    float64 (n_rows, n_cols) mean of a map over each window, row-major window index
Every kernel has a plain NumPy twin in ``reference.py``; the tests run both.
"""
import threading

import numpy as np
from numba import njit, prange

from .grid import grid_starts

# numba's fallback "workqueue" threading layer aborts the process when two Python threads launch
# parallel kernels at once (its omp and tbb layers do not), so parallel kernels run one at a time.
# They take milliseconds, so threads sharing a Segmenter hardly wait.
PARALLEL_LOCK = threading.Lock()

# Rows summed by one parallel task: small enough to split a single window row between threads,
# large enough that the per-task column buffer (width x 8 bytes) is reused many times.
ROWS_PER_TASK = 128


@njit(parallel=True, cache=True)
def _stripe_column_sums(prob, bounds):
    """Column sums (float64) of each horizontal stripe [bounds[k], bounds[k+1]) of ``prob``."""
    n_stripes = bounds.shape[0] - 1
    sums = np.zeros((n_stripes, prob.shape[1]), dtype=np.float64)
    for k in prange(n_stripes):
        acc = sums[k]
        for y in range(bounds[k], bounds[k + 1]):
            row = prob[y]
            for x in range(row.shape[0]):
                acc[x] += row[x]
    return sums


@njit(cache=True)
def _sums_to_means(stripe_sums, bounds, ys, win_h, xs, win_w):
    """Window means from stripe column sums: add a band's stripes, then each window's columns."""
    means = np.empty((ys.shape[0], xs.shape[0]), dtype=np.float64)
    band = np.empty(stripe_sums.shape[1], dtype=np.float64)
    area = float(win_h * win_w)
    for i in range(ys.shape[0]):
        band[:] = 0.0
        first = np.searchsorted(bounds, ys[i])
        last = np.searchsorted(bounds, ys[i] + win_h)
        for k in range(first, last):
            band += stripe_sums[k]
        for j in range(xs.shape[0]):
            means[i, j] = band[xs[j]:xs[j] + win_w].sum() / area
    return means


def _stripe_bounds(height, ys, win_h):
    """Row boundaries where some window starts or ends, plus a split every ROWS_PER_TASK rows."""
    cuts = np.concatenate([ys, ys + win_h, np.arange(0, height, ROWS_PER_TASK), [height]])
    return np.unique(cuts).astype(np.int64)


def as_float_map(prob, name="prob"):
    """``prob`` as a C-contiguous 2-D float32/float64 array, or a ValueError saying what is wrong."""
    prob = np.asarray(prob)
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (H, W), got shape {prob.shape}.")
    if prob.dtype not in (np.float32, np.float64):
        prob = prob.astype(np.float32)
    return np.ascontiguousarray(prob)


def window_means(prob, size, stride=None):
    """Mean of ``prob`` over every window of a grid, in one memory-bound pass.

    prob: (H, W) float map (probabilities or any per-pixel score). size: window side in pixels;
    stride: step between windows (default ``size``). The last row and column of windows are shifted
    inside the map so every pixel is covered; along an axis shorter than ``size`` the window is
    clipped to the axis. Accumulates in float64. Returns float64 (n_rows, n_cols) where
    n_rows = len(grid_starts(H, size, stride)) and likewise for columns.
    """
    prob = as_float_map(prob)
    return window_means_by_rows(lambda top, bottom: prob[top:bottom], prob.shape, size, stride, prob.shape[0])


def window_means_by_rows(rows, shape, size, stride=None, strip_rows=512):
    """``window_means`` of an (H, W) map that is produced a strip of rows at a time, so that the map
    never has to exist whole (a streamed image's merged probabilities).

    rows(top, bottom) returns the map's rows top .. bottom-1 as (bottom - top, W) floats; it is asked
    for consecutive strips of at most about ``strip_rows`` rows (split where windows start or end).
    The float64 sums do not depend on how the rows are grouped: the result equals
    ``window_means`` of the whole map to the last bit.
    """
    height, width = shape
    ys = grid_starts(height, size, stride)
    xs = grid_starts(width, size, stride)
    win_h, win_w = min(size, height), min(size, width)
    bounds = _stripe_bounds(height, ys, win_h)
    sums = np.empty((len(bounds) - 1, width), dtype=np.float64)
    first = 0
    while first < len(bounds) - 1:
        last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + strip_rows, side="right")) - 1)
        strip = as_float_map(rows(int(bounds[first]), int(bounds[last])), "rows")
        with PARALLEL_LOCK:
            sums[first:last] = _stripe_column_sums(strip, bounds[first:last + 1] - bounds[first])
        first = last
    return _sums_to_means(sums, bounds, ys, win_h, xs, win_w)


@njit(cache=True)
def _before(value_a, index_a, value_b, index_b):
    """Order of (value, index) pairs: smaller value first, then lower index; NaN after all numbers."""
    a_nan = value_a != value_a
    b_nan = value_b != value_b
    if a_nan or b_nan:
        if a_nan and b_nan:
            return index_a < index_b
        return b_nan
    if value_a != value_b:
        return value_a < value_b
    return index_a < index_b


@njit(cache=True)
def _sift_down(heap_values, heap_index, size):
    """Restore the max-heap (largest pair at 0) after the root was replaced."""
    parent = 0
    while True:
        child = 2 * parent + 1
        if child >= size:
            return
        if child + 1 < size and _before(heap_values[child], heap_index[child],
                                        heap_values[child + 1], heap_index[child + 1]):
            child += 1
        if _before(heap_values[parent], heap_index[parent], heap_values[child], heap_index[child]):
            heap_values[parent], heap_values[child] = heap_values[child], heap_values[parent]
            heap_index[parent], heap_index[child] = heap_index[child], heap_index[parent]
            parent = child
        else:
            return


@njit(cache=True)
def _sift_up(heap_values, heap_index, child):
    while child > 0:
        parent = (child - 1) // 2
        if _before(heap_values[parent], heap_index[parent], heap_values[child], heap_index[child]):
            heap_values[parent], heap_values[child] = heap_values[child], heap_values[parent]
            heap_index[parent], heap_index[child] = heap_index[child], heap_index[parent]
            child = parent
        else:
            return


@njit(parallel=True, cache=True)
def _chunk_candidates(values, k, n_chunks):
    """For each of n_chunks contiguous chunks, the indices of its k smallest values (unordered)."""
    n = values.shape[0]
    candidates = np.full((n_chunks, k), -1, dtype=np.int64)
    for c in prange(n_chunks):
        lo = c * n // n_chunks
        hi = (c + 1) * n // n_chunks
        heap_values = np.empty(k, dtype=values.dtype)
        heap_index = np.empty(k, dtype=np.int64)
        size = 0
        for i in range(lo, hi):
            v = values[i]
            if size < k:
                heap_values[size] = v
                heap_index[size] = i
                _sift_up(heap_values, heap_index, size)
                size += 1
            elif _before(v, i, heap_values[0], heap_index[0]):
                heap_values[0] = v
                heap_index[0] = i
                _sift_down(heap_values, heap_index, size)
        candidates[c, :size] = heap_index[:size]
    return candidates


def _sorted_by_value_then_index(values, indices):
    """``indices`` ordered by (NaN last, value, index)."""
    picked = values[indices]
    return indices[np.lexsort((indices, picked, np.isnan(picked)))]


def lowest_k(values, k):
    """Indices (int64, shape (min(k, n),)) of the k smallest ``values``, smallest first.

    values: 1-D (or any shape, flattened in C order) real array. Ties go to the lowest index, so
    the choice is deterministic; NaN counts as larger than every number. k >= n returns all indices.
    """
    values = np.ascontiguousarray(np.asarray(values).ravel())
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}.")
    values = values.astype(np.float64, copy=False)  # exact for float32 too: one compiled kernel, not two
    n = values.shape[0]
    k = min(int(k), n)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    n_chunks = max(1, min(64, n // (8 * k)))
    if n_chunks == 1:
        return _sorted_by_value_then_index(values, np.arange(n, dtype=np.int64))[:k]
    with PARALLEL_LOCK:
        candidates = _chunk_candidates(values, k, n_chunks).ravel()
    return _sorted_by_value_then_index(values, candidates[candidates >= 0])[:k]


@njit(parallel=True, cache=True)
def _uncertainty_map(prob, out):
    for y in prange(prob.shape[0]):
        for x in range(prob.shape[1]):
            out[y, x] = 1.0 - 2.0 * abs(prob[y, x] - 0.5)


def uncertainty_map(prob):
    """Per-pixel uncertainty ``1 - 2|p - 0.5|`` of probabilities ``prob`` (H, W): float32 (H, W),
    1 where p = 0.5 (least certain), 0 where p is 0 or 1."""
    prob = as_float_map(prob).astype(np.float32, copy=False)
    out = np.empty_like(prob)
    with PARALLEL_LOCK:
        _uncertainty_map(prob, out)
    return out


@njit(parallel=True, cache=True)
def _margin_map(probs, out):
    for y in prange(probs.shape[1]):
        for x in range(probs.shape[2]):
            top1 = -np.inf
            top2 = -np.inf
            for c in range(probs.shape[0]):
                p = probs[c, y, x]
                if p > top1:
                    top2 = top1
                    top1 = p
                elif p > top2:
                    top2 = p
            out[y, x] = top1 - top2


def margin_map(probs):
    """Per-pixel margin top-1 minus top-2 of class probabilities ``probs`` (K, H, W), K >= 2:
    float32 (H, W), 0 where the two best classes tie (least certain)."""
    probs = np.ascontiguousarray(np.asarray(probs, dtype=np.float32))
    if probs.ndim != 3 or probs.shape[0] < 2 or probs.shape[1] == 0 or probs.shape[2] == 0:
        raise ValueError(f"margin needs class probabilities of shape (K >= 2, H, W), got {probs.shape}.")
    out = np.empty(probs.shape[1:], dtype=np.float32)
    with PARALLEL_LOCK:
        _margin_map(probs, out)
    return out

