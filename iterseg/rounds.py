"""Beyond one shot: how many windows to refine (budget, threshold), which ones (rounds of re-scoring,
non-maximum suppression of overlapping candidates) and how overlapping results are merged (blending).

Glossary
    candidates  int64 (M, 4) every window of the grid with step ``stride``, row-major (y, x, h, w)
    priority    float64 (M,) lower = less certain = refined first (see select.window_scores)
    refined     bool (M,) candidates refined in earlier rounds
    probs       float32 (K, H, W) probabilities: stage 1 upsampled, then merged with stage 2
A round re-scores the merged map, so a window next to a refined one is judged on the new values.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np

from .kernels import lowest_k


def window_limit(patches, budget_macs, s1_macs, window_macs):
    """How many windows may be refined: at most ``patches`` (None: no cap) and, with a budget, as
    many as fit in ``budget_macs`` after stage 1. Never negative."""
    limit = math.inf if patches is None else patches
    if budget_macs is not None:
        limit = min(limit, max(0, int((budget_macs - s1_macs) // window_macs)))
    return limit


def threshold_priority(threshold, score):
    """The priority below which a window counts as uncertain for a threshold on ``score``: windows
    with score < T for 'mean' and 'margin' (lower = less certain), score > T for 'uncertainty'."""
    return 1.0 - threshold if score == "uncertainty" else threshold


def overlap_fraction(window, others):
    """Intersection area of ``window`` (4,) with each of ``others`` (N, 4), over the window's area."""
    y, x, h, w = window
    dy = np.minimum(y + h, others[:, 0] + others[:, 2]) - np.maximum(y, others[:, 0])
    dx = np.minimum(x + w, others[:, 1] + others[:, 3]) - np.maximum(x, others[:, 1])
    return np.clip(dy, 0, None) * np.clip(dx, 0, None) / float(h * w)


def suppress(candidates, order, count, max_overlap, kept):
    """Greedy non-maximum suppression: walk ``order`` (candidate indices, most uncertain first) and keep
    up to ``count`` whose overlap with every window kept so far (``kept``, (N, 4), earlier rounds
    included) is at most ``max_overlap``. Returns the kept candidate indices."""
    chosen, kept = [], np.asarray(kept, dtype=np.int64).reshape(-1, 4)
    for index in order:
        if len(chosen) == count:
            break
        if not len(kept) or overlap_fraction(candidates[index], kept).max() <= max_overlap:
            chosen.append(index)
            kept = np.vstack([kept, candidates[index]])
    return np.array(chosen, dtype=np.int64)


def next_windows(priority, refined, take, threshold=None, candidates=None, max_overlap=None, kept=()):
    """Indices of the next ``take`` candidates to refine: not refined before, below ``threshold``
    (a priority; None: any), and with ``max_overlap`` not overlapping the kept windows more than that."""
    priority = np.where(refined, np.inf, priority)
    if threshold is not None:
        priority = np.where(priority < threshold, priority, np.inf)
    eligible = int(np.isfinite(priority).sum())
    if max_overlap is None:
        return lowest_k(priority, min(take, eligible))
    order = lowest_k(priority, eligible)  # all eligible, most uncertain first
    return suppress(candidates, order, take, max_overlap, kept)


@functools.lru_cache(maxsize=8)
def ramp_weights(height, width):
    """float32 (h, w) blending weights: 1 in the middle, falling linearly to 1/(ramp+1) at the border
    over ramp = a quarter of the side. Positive everywhere, so every refined pixel has weight.
    Computed once per window size (cached; read-only)."""
    def axis(n):
        ramp = max(1, n // 4)
        distance = np.minimum(np.arange(n), np.arange(n)[::-1])
        return np.minimum(1.0, (distance + 1) / (ramp + 1))
    weights = np.outer(axis(height), axis(width)).astype(np.float32)
    weights.flags.writeable = False
    return weights


class Blender:
    """Weighted average of overlapping refined windows: ``add`` window probabilities, ``merged`` puts
    their average (weights ``ramp_weights``) over the stage-1 map where any window lies."""

    def __init__(self, shape, classes):
        self.total = np.zeros((classes,) + tuple(shape), np.float32)
        self.weight = np.zeros(tuple(shape), np.float32)

    def add(self, windows, core_probs):
        """windows (N, 4) of equal size; core_probs float32 (K, N, h, w)."""
        if not len(windows):
            return
        h, w = int(windows[0, 2]), int(windows[0, 3])
        ramp = ramp_weights(h, w)
        rows = (windows[:, 0, None] + np.arange(h))[:, :, None]
        cols = (windows[:, 1, None] + np.arange(w))[:, None, :]
        np.add.at(self.weight, (rows, cols), np.broadcast_to(ramp, (len(windows), h, w)))
        for k in range(self.total.shape[0]):
            np.add.at(self.total[k], (rows, cols), core_probs[k] * ramp)

    def merged(self, stage1_probs):
        covered = self.weight > 0
        out = stage1_probs.copy()
        out[:, covered] = self.total[:, covered] / self.weight[covered]
        return out


@dataclass
class RoundPlan:
    """How many windows, chosen how: the selection options of ``two_stage`` in one place."""
    patches: object
    size: int
    stride: object
    score: str
    budget: object = None
    budget_gmacs: object = None
    rounds: int = 1
    threshold: object = None
    max_overlap: object = None

    @property
    def sliding(self):
        return self.stride is not None and self.stride < self.size

    @property
    def overlap(self):
        if self.max_overlap is not None:
            return self.max_overlap
        return 0.25 if self.sliding else None

    def budget_macs(self, baseline_macs):
        limits = [self.budget * baseline_macs if self.budget is not None else None,
                  self.budget_gmacs * 1e9 if self.budget_gmacs is not None else None]
        limits = [v for v in limits if v is not None]
        return min(limits) if limits else None

    def report(self):
        return {"budget": self.budget, "budget_gmacs": self.budget_gmacs, "rounds": self.rounds,
                "threshold": self.threshold, "max_overlap": self.overlap, "blended": self.sliding}


def refine_notes(plan, refined, candidates, limit):
    """Why as many windows were refined as were: for the report."""
    asked = plan.patches
    if refined == candidates and asked and refined < asked:
        return [f"{asked} patches asked, the grid has only {candidates} windows: all refined"]
    if plan.budget is None and plan.budget_gmacs is None and plan.threshold is None:
        return []
    if refined < limit and plan.threshold is not None:
        why = f"the windows less certain than threshold {plan.threshold:g} ({plan.score})"
    elif limit == asked:
        why = f"the cap of {asked} patches"
    else:
        why = f"as many as the budget allows after stage 1 ({int(limit)})"
    return [f"{refined} windows refined in {plan.rounds} round(s): {why}"]
