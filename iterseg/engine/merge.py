"""Merge: the refined windows over the upsampled coarse map, pasted (later window wins) or blended
(overlapping windows averaged with weights that fall towards their borders).

A ``Merger`` is what the engine merges into and a Result reads from (MONAI's mergers share
``aggregate`` / ``finalize`` alike); ``WindowMerger`` is the one here. It never needs the
full-resolution map: ``at`` evaluates any grid of pixels from the coarse map and the windows that
cover them, so the same object serves an in-memory image (``full``) and a gigapixel TIFF written tile
by tile, pyramid levels included.

Glossary
    base          base(rows, cols) -> float32 (K, len(rows), len(cols)) the upsampled coarse map
                  at full-resolution pixel ``rows`` x ``cols`` (ascending int arrays): a new array,
                  or for a dense merger a view of a map only it holds, merged into in place (merging
                  again after an ``add`` gives the same map: a pasted or blended pixel's value depends
                  on the windows alone)
    windows       int64 (N, 4) of (y, x, h, w), equal-sized within one ``add``
    window_probs  float32 (K, N, h, w) stage-2 probabilities of those windows
"""
import functools
from typing import Protocol

import numpy as np


def take(array, rows, cols):
    """``array`` (K, H, W) at ``rows`` x ``cols``: a slice where they are contiguous, else a copy."""
    return array[:, _as_index(rows)][:, :, _as_index(cols)]


def _as_index(positions):
    positions = np.asarray(positions)
    if len(positions) and positions[-1] - positions[0] == len(positions) - 1:
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _covered(rows, cols, windows):
    """(n, row slice, col slice) of the target grid ``rows`` x ``cols`` covered by each window, in order."""
    for n, (y, x, h, w) in enumerate(windows):
        top, bottom = np.searchsorted(rows, [y, y + h])
        left, right = np.searchsorted(cols, [x, x + w])
        if top < bottom and left < right:
            yield n, slice(int(top), int(bottom)), slice(int(left), int(right))


def paste(target, rows, cols, windows, window_probs):
    """Write ``window_probs`` (K, N, h, w) into ``target`` (K, len(rows), len(cols)), the image at
    ``rows`` x ``cols``, where the windows cover it; the later window wins. In place."""
    if not len(windows):
        return
    win_h, win_w = int(windows[0, 2]), int(windows[0, 3])
    y, x = windows[:, 0] - rows[0], windows[:, 1] - cols[0]
    contiguous = isinstance(_as_index(rows), slice) and isinstance(_as_index(cols), slice)
    if contiguous and (y >= 0).all() and (x >= 0).all() and (y + win_h <= len(rows)).all() and (
            x + win_w <= len(cols)).all():  # PointRend's way: one indexing operation
        rows_of = (y[:, None] + np.arange(win_h))[:, :, None]
        target[:, rows_of, (x[:, None] + np.arange(win_w))[:, None, :]] = window_probs
        return
    for n, r, c in _covered(rows, cols, windows):
        target[:, r, c] = take(window_probs[:, n], rows[r] - windows[n, 0], cols[c] - windows[n, 1])


@functools.lru_cache(maxsize=8)
def ramp_weights(height, width):
    """float32 (1, h, w) blending weights: 1 in the middle, falling linearly to 1/(ramp+1) at the
    border over ramp = a quarter of the side. Positive everywhere, so every refined pixel has weight.
    Computed once per window size (cached; read-only)."""
    def axis(n):
        ramp = max(1, n // 4)
        distance = np.minimum(np.arange(n), np.arange(n)[::-1])
        return np.minimum(1.0, (distance + 1) / (ramp + 1))
    weights = np.outer(axis(height), axis(width)).astype(np.float32)[None]
    weights.flags.writeable = False
    return weights


def blend(target, rows, cols, chunks):
    """Replace ``target`` (K, len(rows), len(cols)) by the weighted average of the windows of
    ``chunks`` [(windows, window_probs)] wherever any of them covers it; elsewhere leave it."""
    total = np.zeros(target.shape, np.float32)
    weight = np.zeros((1,) + target.shape[1:], np.float32)
    for windows, window_probs in chunks:
        ramp = ramp_weights(int(windows[0, 2]), int(windows[0, 3]))
        for n, r, c in _covered(rows, cols, windows):
            inside_rows, inside_cols = rows[r] - windows[n, 0], cols[c] - windows[n, 1]
            w = take(ramp, inside_rows, inside_cols)
            weight[:, r, c] += w
            total[:, r, c] += take(window_probs[:, n], inside_rows, inside_cols) * w
    covered = weight[0] > 0
    target[:, covered] = total[:, covered] / weight[:, covered]


class Merger(Protocol):
    """The merged probability map of an H x W image, as the engine fills it and a Result reads it."""
    shape: tuple  # (H, W)

    @property
    def windows(self) -> np.ndarray:
        """int64 (N, 4) every window added, in order."""

    def add(self, windows: np.ndarray, window_probs: np.ndarray) -> None:
        """Merge ``windows`` (N, 4) and their stage-2 probabilities (K, N, h, w)."""

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 (K, len(rows), len(cols)) merged probabilities at ascending pixel ``rows`` x ``cols``."""

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """float32 (K, bottom - top, W) the merged rows top .. bottom-1."""

    def full(self) -> np.ndarray:
        """float32 (K, H, W) the whole merged map."""


class WindowMerger:
    """A Merger: the merged probability map of an H x W image, ``base`` (the upsampled coarse map)
    with the windows of every ``add`` pasted over it, or averaged where ``blended``. A ``dense``
    merger (an image in memory) keeps the whole map once built; otherwise every call evaluates its
    pixels."""

    def __init__(self, base, shape, blended=False, dense=False):
        self.base = base
        self.shape = tuple(shape)
        self.blended = blended
        self.dense = dense
        self.chunks = []
        self._full = None

    @property
    def windows(self):
        """int64 (N, 4) every window added, in order."""
        return np.concatenate([w for w, _ in self.chunks]) if self.chunks else np.empty((0, 4), np.int64)

    def add(self, windows, window_probs):
        """Record ``windows`` (N, 4) and their probabilities (K, N, h, w)."""
        if len(windows):
            self.chunks.append((np.asarray(windows, np.int64), window_probs))
            self._full = None

    def at(self, rows, cols):
        """float32 (K, len(rows), len(cols)) merged probabilities at ascending pixel ``rows`` x ``cols``."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        if self.dense:
            return take(self.full(), rows, cols)
        return self._evaluate(rows, cols)

    def _evaluate(self, rows, cols):
        out = self.base(rows, cols)
        if self.blended:
            blend(out, rows, cols, self.chunks)
        else:
            for windows, window_probs in self.chunks:
                paste(out, rows, cols, windows, window_probs)
        return out

    def rows(self, top, bottom):
        """float32 (K, bottom - top, W) the merged rows top .. bottom-1."""
        return self.at(np.arange(top, bottom), np.arange(self.shape[1]))

    def full(self):
        """float32 (K, H, W) the whole merged map (kept until the next ``add`` if dense; do not modify)."""
        if self._full is not None:
            return self._full
        full = self._evaluate(np.arange(self.shape[0]), np.arange(self.shape[1]))
        if self.dense:
            self._full = full
        return full
