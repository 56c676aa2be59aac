"""The one loop: stage 1 -> score -> select -> refine -> merge, in rounds, for every source
(an image in memory or a tiled TIFF read tile by tile), and the full-resolution baseline.

Glossary
    source   an engine/source.Source: ArraySource or TiffSource (shape (H, W), view, read_boxes)
    probs    float32 (H, W) foreground probabilities (binary) or (K, H, W) class probabilities
    mask     uint8 (H, W) class ids (0/1 for binary)
    windows  int64 (N, 4) of (y, x, h, w) in full-resolution pixels, in selection order
    scores   float64 (N,) the refined windows' scores when chosen (higher = needed refining more;
             NaN for windows given by the caller)
    macs     engine/cost.py; seconds: {"stage1", "select", "stage2", "merge", "total"} wall-clock
"""
import functools
import logging
import math
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..model.runtime import ran_on
from ..model.runtime import report as runtime_report
from ..timer import Timer
from . import checks
from .coarse import stage1
from .cost import baseline_cost, baseline_macs, cost_report, count_macs, runs_whole, whole_input
from .infer import auto_batch_size, planned_windows, run_whole
from .merge import Merger, WindowMerger, take
from .refine import Refiner, Stage2, refine, refine_whole, s2_reader
from .scores import window_scores
from .selection import next_windows, selection_notes, window_limit
from .settings import check_windows
from .source import Source

log = logging.getLogger(__name__)

# The baseline runs the whole image up to this many pixels (peak memory a few GB for the default
# U-Net) and above it in chunks of BASELINE_CHUNK pixels with receptive-field context (same output).
MAX_WHOLE_PIXELS = 4096 * 4096
BASELINE_CHUNK = 2048
# A streamed image's merged map is scored in strips of at most 512 rows and about this many pixels:
# a strip of a 40000 px wide slide is 104 rows, its interpolation temporaries 0.1 GB instead of 0.4 GB
# (the scores do not depend on the strips, kernels/windows.window_means_by_rows)
SCORE_STRIP_PIXELS = 2 ** 22


@dataclass(eq=False)
class Result:
    """What one prediction produced. ``probs`` and ``mask`` are the full-resolution map, built from
    ``merged`` on first use; for a huge streamed image use ``probs_at`` / ``mask_at`` instead."""
    merged: Merger
    windows: np.ndarray
    scores: np.ndarray
    macs: dict
    seconds: dict
    options: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    view: np.ndarray | None = None
    tiles_read: int | None = None
    cutoff: float = 0.5  # binary models: mask = foreground probability >= cutoff

    @property
    def shape(self):
        """(H, W) of the image."""
        return self.merged.shape

    @functools.cached_property
    def probs(self):
        """float32 (H, W) foreground probabilities, or (K, H, W) for K classes."""
        full = self.merged.full()
        return full[0] if len(full) == 1 else full

    @functools.cached_property
    def mask(self):
        """uint8 (H, W) class ids (0/1 for binary)."""
        return to_mask(self.merged.full(), self.cutoff)

    def probs_at(self, rows, cols):
        """float32 (K, len(rows), len(cols)) probabilities at ascending pixel ``rows`` x ``cols``."""
        return self.merged.at(rows, cols)

    def mask_at(self, rows, cols):
        """uint8 (len(rows), len(cols)) class ids at ascending pixel ``rows`` x ``cols``."""
        return to_mask(self.merged.at(rows, cols), self.cutoff)


def to_mask(probs, cutoff=0.5):
    """uint8 (h, w) class ids of probabilities (K, h, w): p >= cutoff for binary, argmax otherwise."""
    return (probs[0] >= cutoff).astype(np.uint8) if len(probs) == 1 else probs.argmax(axis=0).astype(np.uint8)


def bar(total, desc, unit, show):
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show, leave=False,
                dynamic_ncols=True)


def merger_for(source, coarse, blended):
    """A WindowMerger over ``coarse``: upsampled once with OpenCV for an image in memory (the windows are
    then merged into that map in place: only this merger holds it, and merging again after an
    ``add`` gives the same map, engine/merge.py), pixel by pixel on demand for a streamed one."""
    if source.in_memory:
        full = coarse.full()
        return WindowMerger(lambda rows, cols: take(full, rows, cols), source.shape, blended, dense=True)
    return WindowMerger(coarse.at, source.shape, blended)


def two_stage(source: Source, bundle, settings, windows=None, show_progress=False, refiner: Refiner = refine):
    """Segment ``source`` with ``bundle``: stage 1 everywhere, stage 2 on the windows that score
    highest, in ``settings.rounds`` rounds (engine/settings.py). windows: refine exactly these instead
    (int64 (N, 4), equal sizes; their scores are NaN). refiner: runs stage 2, with engine/refine.refine's
    signature and result (engine/refine.Refiner; iterseg/cluster.py passes one that fans the windows out
    to workers). Returns a Result."""
    timer = Timer()
    s1, s2 = bundle.runners(settings.precision, settings.compile, settings.backend)
    plan = settings.plan(source.shape, s2.config.out_channels, s2.config.size_multiple, bundle.window,
                         bundle.patches, bundle.context)
    if windows is not None:
        windows = check_windows(windows, source.shape)
    with timer("stage1"), bar(source.shape[0], "stage 1", "row", show_progress) as progress:
        coarse, s1_macs, view, notes = stage1(source, s1, bundle.s1_scale, bundle.mean, bundle.std,
                                              progress.update)
    checks.check_finite(coarse.probs, "stage 1", bundle)
    if not source.in_memory:  # a streamed image's memory follows the refined area, not stage 1's chunks
        s1.release_memory()
    merger = merger_for(source, coarse, plan.blend)
    stage2 = Stage2(s2, bundle, source, coarse, plan.settings.context, plan.settings.batch_size)
    if windows is None:
        chosen, scores, box_hw, s2_macs, rounds_log, select_notes = refine_rounds(
            stage2, merger, plan, timer, show_progress, s1_macs, refiner)
    else:
        chosen, scores, box_hw, s2_macs, rounds_log, select_notes = refine_given(
            stage2, merger, timer, show_progress, windows, refiner)
    with timer("merge"):
        if source.in_memory:
            merger.full()
        else:
            s2.release_memory()
    batch_size = settings.batch_size or (auto_batch_size(*box_hw) if box_hw else None)
    options = {**plan.report(), **ran_on(s2), "batch_size": batch_size,
               "s1_input": list(view.shape[:2]), "s2_input": list(box_hw) if box_hw else None,
               "streamed": not source.in_memory, "rounds_log": rounds_log}
    # a user's plain functions (engine/networks.py) have no MACs: no cost, so no cost warning either
    macs = (cost_report(bundle, source.shape, s1_macs, stage2_macs=s2_macs) if getattr(bundle, "countable", True)
            else None)
    notes += checks.input_notes(bundle, view, coarse.probs) + (checks.cost_notes(macs) if macs else [])
    return Result(merged=merger, windows=chosen, scores=scores, macs=macs, seconds=timer.total(), options=options,
                  notes=list(source.notes) + notes + select_notes + default_note(bundle, settings, windows),
                  view=view, tiles_read=source.tiles_read)


def refine_given(stage2, merger, timer, show, windows, refiner=refine):
    """Stage 2 on the caller's ``windows``; returns what ``refine_rounds`` returns."""
    if not len(windows):
        return windows, np.empty(0), None, 0, [], []
    with timer("stage2"), bar(len(windows), "stage 2", "window", show) as progress:
        window_probs, boxes = refiner(stage2, windows, progress.update)
        checks.check_finite(window_probs, "stage 2", stage2.bundle)
        merger.add(windows, window_probs)
    box_hw = tuple(int(v) for v in boxes[0, 2:])
    return (windows, np.full(len(windows), np.nan), box_hw, len(boxes) * count_macs(stage2.runner.config, *box_hw),
            [], [])


def default_note(bundle, settings, windows):
    """[a note] when the window count is the bundle's default, chosen from its sweep; else []."""
    if windows is not None or settings.patches is not None or not settings.capped_by_count or bundle.patches is None:
        return []
    measured = bundle.provenance.get("default", {}).get("measured")
    return [f"{bundle.patches} windows: the default of model {bundle.name!r}" + (f" ({measured})" if measured else "")]


def refine_rounds(stage2, merger, plan, timer, show, s1_macs, refiner=refine):
    """Choose and refine windows in ``plan.settings.rounds`` rounds, re-scoring the merged map after
    each: (windows in order, their scores, network input (h, w), stage 2's MACs, log per round, notes).

    A round whose windows' boxes would cost at least stage 2 over the whole image (an image in
    memory) runs that instead and cuts the windows from it (refine.refine_whole): refining every
    window then gives the whole-image result at no more than its cost."""
    settings, source, bundle = plan.settings, stage2.source, stage2.bundle
    shape, config = source.shape, stage2.runner.config
    grid, box_hw, window_macs = planned_windows(plan, config, shape)
    limit = window_limit(settings.patches, plan.budget_macs(baseline_macs(bundle, shape)), s1_macs, window_macs)
    refined = np.zeros(len(grid), bool)
    chosen_all, scores_all, rounds_log = [], [], []
    s2_macs, inputs = 0, box_hw
    strip_rows = shape[0] if source.in_memory else min(512, max(16, SCORE_STRIP_PIXELS // shape[1]))
    for round_index in range(settings.rounds):
        remaining = limit - refined.sum()
        if remaining <= 0:
            break
        take_now = remaining if math.isinf(remaining) else -(-int(remaining) // (settings.rounds - round_index))
        with timer("select"):
            scores = window_scores(merger.rows, shape, plan.size, plan.stride, settings.score, strip_rows).ravel()
            chosen = next_windows(scores, refined, take_now, settings.threshold, grid, plan.max_overlap,
                                  merger.windows)
        if not len(chosen):
            break
        with timer("stage2"), bar(len(chosen), "stage 2", "window", show) as progress:
            if source.in_memory and runs_whole(config, shape, len(chosen), window_macs):
                chunk = BASELINE_CHUNK if shape[0] * shape[1] > MAX_WHOLE_PIXELS else None
                window_probs, round_macs = refine_whole(stage2, grid[chosen], chunk)
                inputs = whole_input(config, shape)
            else:
                window_probs, _ = refiner(stage2, grid[chosen], progress.update)
                round_macs = len(chosen) * window_macs
            checks.check_finite(window_probs, "stage 2", bundle)
            merger.add(grid[chosen], window_probs)
        refined[chosen] = True
        chosen_all.append(chosen)
        scores_all.append(scores[chosen])
        s2_macs += round_macs
        rounds_log.append({"windows": grid[chosen].tolist(), "macs": int(round_macs)})
    order = np.concatenate(chosen_all) if chosen_all else np.empty(0, np.int64)
    notes = selection_notes(settings, len(order), len(grid), limit)
    return (grid[order], np.concatenate(scores_all) if scores_all else np.empty(0), inputs if len(order) else None,
            s2_macs, rounds_log, notes)


def baseline(source: Source, bundle, settings, chunk=None, batch_size=1):
    """The full-resolution network over the whole ``source`` (Bundle.baseline_kind says which: S2,
    the reference network of a conditioned bundle, or stage 1 then the conditioned S2). ``chunk``
    (pixels) processes it in square chunks with receptive-field context, which leaves the output
    unchanged up to float rounding; by default only images above MAX_WHOLE_PIXELS are chunked. Returns a Result."""
    timer = Timer()
    s1 = bundle.runners(settings.precision, settings.compile, settings.backend)[0]
    network = bundle.baseline_runner(settings.precision, settings.compile, settings.backend)
    shape = source.shape
    if chunk is None and shape[0] * shape[1] > MAX_WHOLE_PIXELS:
        chunk = BASELINE_CHUNK
    coarse, view, notes = None, None, []
    if bundle.baseline_kind == "s1+s2":
        with timer("stage1"):
            coarse, _, view, notes = stage1(source, s1, bundle.s1_scale, bundle.mean, bundle.std)
        checks.check_finite(coarse.probs, "stage 1", bundle)
        notes += checks.input_notes(bundle, view, coarse.probs)
    read = s2_reader(source, coarse, bundle.baseline_kind == "s1+s2")
    with timer("stage2"):
        probs, _, _ = run_whole(network, read, shape, *bundle.normalisation(network.config), chunk=chunk,
                                batch_size=batch_size)
    checks.check_finite(probs, "the full-resolution network", bundle)
    for name in ("stage1", "select", "merge"):
        timer.seconds.setdefault(name, 0.0)
    merged = WindowMerger(lambda rows, cols: take(probs, rows, cols).copy(), shape, dense=True)
    options = {"baseline": True, "kind": bundle.baseline_kind, "chunk": chunk,
               **runtime_report(settings.precision, settings.backend, settings.compile), **ran_on(network)}
    return Result(merged=merged, windows=np.empty((0, 4), np.int64), scores=np.empty(0),
                  macs=baseline_cost(bundle, shape), seconds=timer.total(), options=options,
                  notes=list(source.notes) + notes, view=view, tiles_read=source.tiles_read)
