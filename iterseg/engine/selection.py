"""Selection: how many windows to refine (count, budget, threshold) and which (highest score first,
overlap suppression, never a window twice).

Glossary
    grid        int64 (M, 4) every window of the grid with step ``stride``, row-major (y, x, h, w)
    scores      float64 (M,) higher = refine first (see scores.py)
    refined     bool (M,) grid windows refined in earlier rounds
    kept        int64 (N, 4) windows chosen so far (for overlap suppression)
"""
import math

import numpy as np

from ..kernels import lowest_k


def window_limit(patches, budget_macs, stage1_macs, window_macs):
    """How many windows may be refined: at most ``patches`` (None: no cap) and, with a budget, as
    many as fit in ``budget_macs`` after stage 1. Never negative; math.inf when nothing caps it."""
    limit = math.inf if patches is None else patches
    if budget_macs is not None:
        limit = min(limit, max(0, int((budget_macs - stage1_macs) // window_macs)))
    return limit


def overlap_fraction(window, others):
    """Intersection area of ``window`` (4,) with each of ``others`` (N, 4), over the window's area."""
    y, x, h, w = window
    dy = np.minimum(y + h, others[:, 0] + others[:, 2]) - np.maximum(y, others[:, 0])
    dx = np.minimum(x + w, others[:, 1] + others[:, 3]) - np.maximum(x, others[:, 1])
    return np.clip(dy, 0, None) * np.clip(dx, 0, None) / float(h * w)


def suppress(grid, order, count, max_overlap, kept):
    """Greedy non-maximum suppression: walk ``order`` (grid indices, highest score first) and keep
    up to ``count`` whose overlap with every window kept so far (``kept``, earlier rounds included)
    is at most ``max_overlap``. Returns the kept grid indices."""
    chosen, kept = [], np.asarray(kept, dtype=np.int64).reshape(-1, 4)
    for index in order:
        if len(chosen) == count:
            break
        if not len(kept) or overlap_fraction(grid[index], kept).max() <= max_overlap:
            chosen.append(index)
            kept = np.vstack([kept, grid[index]])
    return np.array(chosen, dtype=np.int64)


def next_windows(scores, refined, take, threshold=None, grid=None, max_overlap=None, kept=()):
    """Indices of the next ``take`` grid windows to refine, highest score first: never refined before,
    with a score above ``threshold`` (None: any), and, with ``max_overlap``, overlapping the kept
    windows by at most that fraction of their area."""
    priority = np.where(refined, np.inf, -np.asarray(scores, dtype=np.float64))
    if threshold is not None:
        priority = np.where(priority < -threshold, priority, np.inf)
    eligible = int(np.isfinite(priority).sum())
    if max_overlap is None:
        return lowest_k(priority, int(min(take, eligible)))
    order = lowest_k(priority, eligible)
    return suppress(grid, order, take, max_overlap, kept)


def selection_notes(settings, refined, total, limit):
    """Why as many windows were refined as were: lines for the report."""
    asked = settings.patches
    if refined == total and asked and refined < asked:
        return [f"{asked} patches asked, the grid has only {total} windows: all refined"]
    if settings.capped_by_count:
        return []
    if refined < limit and settings.threshold is not None:
        why = f"the windows scoring above threshold {settings.threshold:g} ({settings.score})"
    elif limit == asked:
        why = f"the cap of {asked} patches"
    else:
        why = f"as many as the budget allows after stage 1 ({int(limit)})"
    return [f"{refined} windows refined in {settings.rounds} round(s): {why}"]
