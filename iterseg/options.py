"""Validation of the two-stage options, shared by the in-memory (pipeline.py) and streaming
(stream.py) paths: every bad value becomes an InputError that says what is allowed."""
import numpy as np

from .errors import InputError
from .select import SCORES, default_score


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_options(patches, patch_size, stride, score, batch_size, context, num_channels):
    """Validate the options of ``two_stage``; returns the score function to use."""
    _positive_int("patches", patches, minimum=0)
    if batch_size is not None:
        _positive_int("batch_size", batch_size)
    _positive_int("context", context, minimum=0)
    if patch_size is not None:
        _positive_int("patch_size", patch_size)
    if stride is not None:
        _positive_int("stride", stride)
    score = score or default_score(num_channels)
    if score not in SCORES:
        raise InputError(f"score must be one of {', '.join(SCORES)}, got {score!r}.")
    if score == "mean" and num_channels > 1:
        raise InputError("score 'mean' needs a binary model; use --score margin for multi-class models.")
    return score


def check_windows(windows, height, width):
    """``windows`` as int64 (N, 4) of equal-sized squares inside an H x W image, or InputError."""
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[1] != 4 or not np.issubdtype(windows.dtype, np.integer):
        raise InputError(f"windows must be an integer array of shape (N, 4) holding (y, x, h, w), "
                         f"got {windows.dtype} {windows.shape}.")
    windows = windows.astype(np.int64)
    if len(windows) == 0:
        return windows
    y, x, h, w = windows.T
    if (h != h[0]).any() or (w != w[0]).any() or h[0] < 1 or w[0] < 1:
        raise InputError("windows must all have the same positive height and width.")
    if (y < 0).any() or (x < 0).any() or (y + h > height).any() or (x + w > width).any():
        raise InputError(f"windows must lie inside the {height} x {width} image.")
    return windows


def _positive_number(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise InputError(f"{name} must be a number > 0, got {value!r}.")
    return float(value)


def check_round_options(budget, budget_gmacs, rounds, threshold, max_overlap):
    """Validate the budget, rounds, threshold and overlap options of ``two_stage``."""
    _positive_number("budget", budget)
    _positive_number("budget_gmacs", budget_gmacs)
    _positive_int("rounds", rounds)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number))
                                  or not 0 <= threshold <= 1):
        raise InputError(f"threshold must be a score between 0 and 1, got {threshold!r}.")
    if max_overlap is not None and (isinstance(max_overlap, bool) or not isinstance(max_overlap, (int, float, np.number))
                                    or not 0 <= max_overlap < 1):
        raise InputError(f"max_overlap must be a fraction >= 0 and < 1, got {max_overlap!r}.")
