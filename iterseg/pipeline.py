"""The two-stage method: stage 1 -> select -> stage 2 -> merge, and the full-resolution baseline.

Glossary
    image    (H, W) or (H, W, C) array as read from disk, or a path to an image file
    probs    float32 (H, W) foreground probabilities (binary) or (K, H, W) class probabilities
    mask     uint8 (H, W) class ids (0/1 for binary)
    windows  int64 (N, 4) of (y, x, h, w) in full-resolution pixels, in selection order
    macs     {"stage1", "stage2", "total", "baseline"} ints, "ratio" = total / baseline, plus the
             counting convention and the operators fvcore did not count (see flops.py)
    seconds  {"stage1", "select", "stage2", "merge", "total"} wall-clock seconds
"""
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .disk.images import read_image
from .errors import InputError
from .flops import baseline_cost, baseline_macs, count_macs, cost_report
from .infer import auto_batch_size, context_boxes, gather_boxes, paste_cores, run_cores, run_whole
from .kernels import grid_windows, warm_up
from .model.runtime import check_precision
from .model.store import DEFAULT_MODEL, load_bundle
from .prepare import as_float_image
from .options import check_options, check_round_options, check_windows
from .rounds import Blender, RoundPlan, next_windows, refine_notes, threshold_priority, window_limit
from .select import default_patch_size, window_scores
from .stage1 import stage1, stage1_size
from .stage2 import refine, s2_feed
from .stream import two_stage_tiled
from .timer import Timer

log = logging.getLogger(__name__)

# The baseline runs the whole image up to this many pixels (peak memory a few GB for the default
# U-Net) and above it in tiles of BASELINE_TILE pixels with receptive-field context (same output).
# Tiling costs extra MACs for the context, so it is not used where memory allows a single pass.
MAX_WHOLE_PIXELS = 4096 * 4096
BASELINE_TILE = 2048


@dataclass
class Result:
    """What one prediction produced; ``probs``/``mask`` have the image's height and width."""
    mask: np.ndarray
    probs: np.ndarray
    windows: np.ndarray
    scores: np.ndarray
    macs: dict
    seconds: dict
    options: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def finish(probs, windows, scores, macs, timer, options, notes):
    """Mask from probabilities, binary channel squeezed: the Result."""
    with timer("merge"):
        if probs.shape[0] == 1:
            probs = probs[0]
            mask = (probs >= 0.5).astype(np.uint8)
        else:
            mask = probs.argmax(axis=0).astype(np.uint8)
    seconds = timer.total()
    log.debug("options %s; seconds %s; MACs ratio %.4f", options, {k: round(v, 4) for k, v in seconds.items()},
              macs["ratio"])
    return Result(mask=mask, probs=probs, windows=windows, scores=scores, macs=macs,
                  seconds=seconds, options=options, notes=notes)


def two_stage(image, bundle, patches=None, patch_size=None, score=None, stride=None, batch_size=None,
              context=0, windows=None, precision="fp32", compile=False, budget=None, budget_gmacs=None,
              rounds=1, threshold=None, max_overlap=None):
    """Segment ``image`` with ``bundle``: stage 1 everywhere, stage 2 on the least certain windows.

    patches: how many windows (default 16; with a budget or threshold, no cap but theirs; 0 = stage 1
    only). patch_size: window side (default ceil(max(H, W) / patches) rounded up to the size
    multiple). score: 'mean' | 'uncertainty' | 'margin'. stride: step of the candidate grid (default
    the window side); below it, candidates overlap, at most ``max_overlap`` (default 0.25) of a window's
    area is shared by two chosen windows, and overlapping results are blended (rounds.Blender).
    budget / budget_gmacs: at most this fraction of the baseline's MACs / this many GMACs in all.
    rounds: choose the windows in R rounds, re-scoring the merged map after each. threshold: refine only
    windows less certain than this score. windows: refine exactly these (int64 (N, 4), equal sizes;
    scores NaN). batch_size: windows per network call (default infer.auto_batch_size). precision,
    compile: see model/runtime.py. Returns a Result; ``options["rounds_log"]`` lists each round's windows and MACs.
    """
    timer = Timer()
    s1, s2 = bundle.runners(check_precision(precision), compile)
    score = check_options(patches if patches is not None else 0, patch_size, stride, score, batch_size, context,
                          s2.config.out_channels)
    check_round_options(budget, budget_gmacs, rounds, threshold, max_overlap)
    image, notes = as_float_image(image, bundle.in_channels)
    height, width = image.shape[:2]
    if windows is not None:
        windows = check_windows(windows, height, width)
        patches, patch_size = len(windows), int(windows[0, 2]) if len(windows) else 1
    elif patches is None and budget is None and budget_gmacs is None and threshold is None:
        patches = 16
    patch_size = patch_size or default_patch_size(height, width, patches or 16, s2.config.size_multiple)
    with timer("stage1"):
        probs, s1_hw = stage1(s1, image, bundle.s1_scale, bundle.mean, bundle.std)
    plan = RoundPlan(patches, patch_size, stride, score, budget, budget_gmacs, rounds, threshold, max_overlap)
    if windows is not None:
        with timer("stage2"):
            probs, boxes = refine(s2, image, probs, windows, s2_feed(bundle, probs), batch_size, context)
        scores, log_rounds = np.full(len(windows), np.nan), []
    else:
        probs, windows, scores, boxes, log_rounds = refine_in_rounds(image, probs, s1_hw, bundle, s2, plan,
                                                                     batch_size, context, timer, notes)
    box_hw = tuple(int(v) for v in boxes[0, 2:]) if len(boxes) else None
    macs = cost_report(bundle, (height, width), s1_hw, box_hw, len(boxes))
    options = {"patches": patches, "patch_size": int(patch_size), "stride": int(stride or patch_size),
               "score": score, "batch_size": batch_size or (auto_batch_size(*box_hw) if box_hw else None),
               "context": context, "precision": precision, "s1_input": list(s1_hw),
               "s2_input": list(box_hw) if box_hw else None, **plan.report(), "rounds_log": log_rounds}
    return finish(probs, windows, scores, macs, timer, options, notes)


def refine_in_rounds(image, probs, s1_hw, bundle, s2, plan, batch_size, context, timer, notes):
    """Stage 2 in ``plan.rounds`` rounds over the candidate grid; returns (merged probs, windows in
    order, their scores, network input boxes, one log entry per round)."""
    height, width = image.shape[:2]
    candidates = grid_windows(height, width, plan.size, plan.stride)
    core = candidates[:1]
    box = context_boxes(core, context, s2.config.size_multiple, (height, width))[0][0]
    window_macs = count_macs(s2.config, int(box[2]), int(box[3]))
    s1_macs = count_macs(bundle.s1.config, *s1_hw)
    limit = window_limit(plan.patches, plan.budget_macs(baseline_macs(bundle, height, width)), s1_macs, window_macs)
    threshold = threshold_priority(plan.threshold, plan.score) if plan.threshold is not None else None
    refined = np.zeros(len(candidates), bool)
    blender = Blender((height, width), probs.shape[0]) if plan.sliding else None
    stage1_probs, chosen_all, scores_all, boxes_all, log_rounds = probs, [], [], [], []
    gather, mean, std = s2_feed(bundle, stage1_probs)
    for round_index in range(plan.rounds):
        remaining = limit - refined.sum()
        if remaining <= 0:
            break
        take = remaining if math.isinf(remaining) else -(-int(remaining) // (plan.rounds - round_index))
        with timer("select"):
            scores, priority = window_scores(probs, plan.size, plan.stride, plan.score)
            kept = candidates[np.concatenate(chosen_all)] if chosen_all else ()
            chosen = next_windows(priority.ravel(), refined, take, threshold, candidates, plan.overlap, kept)
        if not len(chosen):
            break
        with timer("stage2"):
            core_probs, boxes = run_cores(s2, image, candidates[chosen], context, mean, std, batch_size, gather)
            if blender is None:
                probs = probs.copy() if probs is stage1_probs else probs
                paste_cores(probs, candidates[chosen], core_probs)
            else:
                blender.add(candidates[chosen], core_probs)
                probs = blender.merged(stage1_probs)
        refined[chosen] = True
        chosen_all.append(chosen)
        scores_all.append(scores.ravel()[chosen])
        boxes_all.append(boxes)
        log_rounds.append({"windows": candidates[chosen].tolist(), "macs": int(len(chosen) * window_macs)})
    notes += refine_notes(plan, int(refined.sum()), len(candidates), limit)
    order = np.concatenate(chosen_all) if chosen_all else np.empty(0, np.int64)
    return (probs, candidates[order], np.concatenate(scores_all) if scores_all else np.empty(0),
            np.concatenate(boxes_all) if boxes_all else np.empty((0, 4), np.int64), log_rounds)


def baseline(image, bundle, batch_size=1, tile=None, precision="fp32", compile=False):
    """The full-resolution network over the whole image (Bundle.baseline_kind says which: S2, the
    reference network of a conditioned bundle, or stage 1 then the conditioned S2). ``tile`` (pixels)
    processes it in tiles with receptive-field context, which leaves the output unchanged up to float
    rounding; by default only images above MAX_WHOLE_PIXELS are tiled (in BASELINE_TILE tiles)."""
    timer = Timer()
    s1, network = bundle.runners(check_precision(precision), compile)[0], bundle.baseline_runner(precision, compile)
    image, notes = as_float_image(image, bundle.in_channels)
    height, width = image.shape[:2]
    if tile is None and height * width > MAX_WHOLE_PIXELS:
        tile = BASELINE_TILE
    feed = (gather_boxes, bundle.mean, bundle.std)
    if bundle.baseline_kind == "s1+s2":
        with timer("stage1"):
            feed = s2_feed(bundle, stage1(s1, image, bundle.s1_scale, bundle.mean, bundle.std)[0])
    gather, mean, std = feed
    with timer("stage2"):
        probs = run_whole(network, image, mean, std, tile=tile, batch_size=batch_size, gather=gather)
    for name in ("stage1", "select"):
        timer.seconds.setdefault(name, 0.0)
    return finish(probs, np.empty((0, 4), np.int64), np.empty(0), baseline_cost(bundle, (height, width)), timer,
                  {"baseline": True, "kind": bundle.baseline_kind, "tile": tile, "precision": precision}, notes)


class Segmenter:
    """A loaded bundle with the methods of the public contract (see DESIGN.md)."""

    def __init__(self, bundle, source=None, precision="fp32", compile=False):
        self.bundle = bundle
        self.source = str(source) if source is not None else bundle.name
        self.defaults = {"precision": check_precision(precision), "compile": bool(compile)}
        warm_up()  # numba kernels load once here, not inside the first image's timings

    def __repr__(self):
        return (f"Segmenter({self.source!r}, classes={list(self.bundle.class_names)}, "
                f"precision={self.defaults['precision']!r})")

    def _image(self, image):
        if isinstance(image, (str, Path)):
            return read_image(image)
        return image

    def predict(self, image, patches=None, **options):
        """Two-stage segmentation of ``image`` (path or array); options as ``two_stage``."""
        return two_stage(self._image(image), self.bundle, patches, **{**self.defaults, **options})

    def predict_tiled(self, path, patches=None, show_progress=False, **options):
        """Two-stage segmentation of a tiled (Big)TIFF read region by region, in memory that grows
        with the refined area, not the image: a stream.TiledResult (options as ``two_stage``)."""
        return two_stage_tiled(path, self.bundle, patches, show_progress=show_progress,
                               **{**self.defaults, **options})

    def predict_baseline(self, image, **options):
        """The full-resolution model over the whole image; options as ``baseline``."""
        return baseline(self._image(image), self.bundle, **{**self.defaults, **options})

    def macs(self, height, width, patches=16, patch_size=None, context=0):
        """The cost report for an H x W image without running anything (windows of the default grid)."""
        s2 = self.bundle.s2.config
        size = patch_size or default_patch_size(height, width, patches, s2.size_multiple)
        n = min(patches, len(grid_windows(height, width, size)))
        core = np.array([[0, 0, min(size, height), min(size, width)]], dtype=np.int64)
        box = context_boxes(core, context, s2.size_multiple, (height, width))[0][0]
        return cost_report(self.bundle, (height, width), stage1_size(height, width, self.bundle.s1_scale),
                           tuple(box[2:]), n)


def load(name_or_path=DEFAULT_MODEL, precision="fp32", compile=False):
    """A Segmenter for an embedded model name (default 'ph2') or a bundle file path, running its
    networks in ``precision`` ('fp32' or 'bf16'), optionally through torch.compile (model/runtime.py)."""
    return Segmenter(load_bundle(name_or_path), source=name_or_path, precision=precision, compile=compile)
