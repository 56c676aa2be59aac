"""Where the windows of a grid start along one axis.

Windows of side ``size`` start every ``stride`` pixels; the last window is shifted back inside the
axis so that every pixel is covered and all windows have the same size. An axis shorter than the
window has a single window starting at 0 that is clipped to the axis.
"""
import numpy as np


def check_window(size, stride):
    """Validate a window side and stride (pixels); returns the stride to use."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"window size must be a positive integer, got {size!r}.")
    if stride is None:
        return int(size)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive integer or None, got {stride!r}.")
    return int(stride)


def grid_starts(length, size, stride=None):
    """Start offsets (int64, ascending, unique) of windows of side ``size`` along an axis of ``length``.

    Every pixel is covered when stride <= size; a larger stride samples windows with gaps between them.
    """
    stride = check_window(size, stride)
    if length < 1:
        raise ValueError(f"axis length must be >= 1, got {length}.")
    last = max(length - size, 0)
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, np.int64(last))
    return starts


def grid_windows(height, width, size, stride=None):
    """All windows of the grid over an H x W map, row-major: int64 (n_rows * n_cols, 4) of (y, x, h, w).
    Windows are ``size`` square, clipped to the map along an axis shorter than ``size``."""
    ys, xs = grid_starts(height, size, stride), grid_starts(width, size, stride)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    sizes = np.broadcast_to([min(size, height), min(size, width)], (grid_y.size, 2))
    return np.column_stack([grid_y.ravel(), grid_x.ravel(), sizes]).astype(np.int64)
