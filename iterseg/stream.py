"""Two-stage segmentation of tiled TIFFs in bounded memory: cost grows with the refined area.

Glossary
    source        TiledImage (disk/tiff.py): level-0 regions read tile by tile, pyramid levels
    view          float32 (h1, w1, C) in [0, 1]: the image at stage-1 scale
    probs_small   float32 (K, h1, w1) stage-1 probabilities at stage-1 scale (never upsampled whole)
    windows       int64 (N, 4) (y, x, h, w) in level-0 pixels, in selection order
    window_probs  float32 (K, N, h, w) stage-2 probabilities of the windows
The full-resolution map is ``window_probs`` where a window covers a pixel (the later window wins),
else the bilinear upsampling of ``probs_small`` (OpenCV's INTER_LINEAR convention): what the
in-memory pipeline computes, evaluated here one output tile at a time (``TiledResult.probs_at``).
"""
import sys
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from .disk.tiff import TiledImage, mirror_index, pyramid_tiles, write_pyramid
from .errors import InputError
from .flops import baseline_macs, count_macs, cost_report
from .infer import align_up, auto_batch_size, context_boxes, run_cores, run_whole
from .kernels import grid_starts, grid_windows, margin_map, uncertainty_map
from .model.runtime import check_precision
from .options import check_options, check_round_options
from .prepare import as_float_image
from .rounds import RoundPlan, next_windows, refine_notes, threshold_priority, window_limit
from .select import default_patch_size
from .stage1 import resize, stage1_size
from .timer import Timer

STRIP_ROWS = 512            # level-0 rows read at a time to build the stage-1 view without a pyramid
# Stage 1 runs whole up to S1_WHOLE_PIXELS (about 0.75 GB of activations for the default U-Net) and
# above it in equal tiles of at most S1_TILE pixels a side, each with receptive-field context.
# Whole is much faster where it fits: a 1250^2 view took 2.9 s whole and 11.2 s in 1024 px tiles.
S1_WHOLE_PIXELS = 1300 ** 2
S1_TILE = 1024
STREAM_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def bar(total, desc, unit, show):
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show, leave=False,
                dynamic_ncols=True)


# --- resampling weights (exact twins of OpenCV's INTER_LINEAR and INTER_AREA) ----------------------

def linear_taps(positions, small, full):
    """Bilinear source taps for level-0 ``positions`` on an axis of ``full`` pixels resampled from
    ``small``: (index0, index1, weight of index1), as cv2.resize INTER_LINEAR computes them."""
    source = (np.asarray(positions, np.float64) + 0.5) * (small / full) - 0.5
    index0 = np.floor(source).astype(np.int64)
    frac = source - index0
    frac[index0 < 0] = 0
    index0 = np.clip(index0, 0, small - 1)
    frac[index0 >= small - 1] = 0
    return index0, np.minimum(index0 + 1, small - 1), frac.astype(np.float32)


def interpolation_matrix(positions, small, full):
    """(float32 (len(positions), n) bilinear weights, the slice of ``small`` indices they use):
    the upsampled values at ``positions`` are weights @ values[slice]."""
    index0, index1, frac = linear_taps(positions, small, full)
    first, last = int(index0.min()), int(index1.max())
    weights = np.zeros((len(index0), last - first + 1), np.float32)
    at = np.arange(len(index0))
    weights[at, index0 - first] += 1 - frac
    weights[at, index1 - first] += frac
    return weights, slice(first, last + 1)


def window_weights(starts, size, small, full):
    """(len(starts), small) matrix: row i sums the bilinear weights of positions starts[i] .. +size."""
    positions = np.asarray(starts)[:, None] + np.arange(size)
    index0, index1, frac = linear_taps(positions.ravel(), small, full)
    weights = np.zeros((len(starts), small))
    row = np.repeat(np.arange(len(starts)), size)
    np.add.at(weights, (row, index0), 1 - frac)
    np.add.at(weights, (row, index1), frac)
    return weights


def area_weights(rows, small, full):
    """(dest rows, len(rows)) INTER_AREA weights of level-0 ``rows`` (a contiguous run) onto the
    stage-1 rows they overlap, and those dest row indices."""
    scale = full / small
    first = int(rows[0] // scale)
    last = min(small - 1, int((rows[-1] + 1 - 1e-9) // scale))
    dest = np.arange(first, last + 1)
    low = np.maximum(dest[:, None] * scale, rows[None, :])
    high = np.minimum((dest[:, None] + 1) * scale, rows[None, :] + 1)
    return np.clip(high - low, 0, None) / scale, dest


# --- stage 1 ---------------------------------------------------------------------------------------

def view_from_pyramid(source, h1, w1, channels):
    """The stage-1 view from the smallest pyramid level at least h1 x w1, or None if there is none."""
    candidates = [(shape[0], index) for index, shape in enumerate(source.level_shapes)
                  if index and shape[0] >= h1 and shape[1] >= w1]
    if not candidates:
        return None, None
    _, index = min(candidates)
    level, notes = as_float_image(source.read_level(index), channels)
    if level.shape[:2] != (h1, w1):
        level = resize(level, h1, w1, cv2.INTER_AREA)
    return level, f"stage 1 read pyramid level {index} ({level.shape[1]} x {level.shape[0]} after INTER_AREA)"


def view_from_strips(source, h1, w1, channels, show):
    """The stage-1 view built from level-0 strips: INTER_AREA across each strip's columns with
    OpenCV, then across rows with the same area weights, accumulated; equals cv2.resize INTER_AREA
    of the whole image up to float rounding, with one strip in memory."""
    height, width = source.shape[:2]
    view = np.zeros((h1, w1, channels), np.float64)
    with bar(height, "stage 1: reading", "row", show) as progress:
        for top in range(0, height, STRIP_ROWS):
            rows = np.arange(top, min(height, top + STRIP_ROWS))
            strip, _ = as_float_image(source.read_region(top, 0, len(rows), width), channels)
            narrow = resize(strip, len(rows), w1, cv2.INTER_AREA)
            weights, dest = area_weights(rows, h1, height)
            view[dest] += np.tensordot(weights, narrow, axes=(1, 0))
            progress.update(len(rows))
    return view.astype(np.float32)


def s1_tile(h1, w1):
    """Tile side for a stage-1 view of h1 x w1 (None: run it whole): as few equal tiles as fit S1_TILE."""
    if h1 * w1 <= S1_WHOLE_PIXELS:
        return None
    return max(-(-side // -(-side // S1_TILE)) for side in (h1, w1))


def stage1_streamed(source, runner, bundle, show):
    """(probs_small (K, h1, w1), (h1, w1), MACs of stage 1 as run, notes)."""
    height, width = source.shape[:2]
    h1, w1 = stage1_size(height, width, bundle.s1_scale)
    view, note = view_from_pyramid(source, h1, w1, bundle.in_channels)
    if view is None:
        view = view_from_strips(source, h1, w1, bundle.in_channels, show)
        note = "stage 1 view built from level-0 strips (no pyramid level at least 1/8 scale)"
    tile = s1_tile(h1, w1)
    cores = grid_windows(h1, w1, tile) if tile else np.array([[0, 0, h1, w1]])
    with bar(len(cores), "stage 1: network", "tile", show) as progress:
        probs = run_whole(runner, view, bundle.mean, bundle.std, tile=tile, progress=progress.update)
    if tile:
        context = align_up(runner.config.receptive_radius, runner.config.size_multiple)
        box = context_boxes(cores[:1], context, runner.config.size_multiple, (h1, w1))[0][0]
        macs = len(cores) * count_macs(runner.config, int(box[2]), int(box[3]))
        note += f"; stage 1 ran in {len(cores)} tiles of {tile} px with receptive-field context"
    else:
        macs = count_macs(runner.config, h1, w1)
    return probs, (h1, w1), macs, view, [note]


# --- select ------------------------------------------------------------------------------------------

def select_streamed(probs_small, shape, patches, size, stride, score, threshold=None):
    """The ``patches`` least certain windows of the level-0 grid, scored on the stage-1 map: the
    window mean of the bilinear upsampling is a weighted sum of stage-1 pixels with separable weights,
    so it is exact for ``mean``; for ``uncertainty``/``margin`` the per-pixel certainty is taken at
    stage-1 scale (an approximation; noted). ``patches`` may be infinite (no cap); ``threshold`` is a
    priority (rounds.threshold_priority). Returns (windows, scores, notes)."""
    height, width = shape
    h1, w1 = probs_small.shape[1:]
    stride = stride or size
    windows = grid_windows(height, width, size, stride)
    ys, xs = grid_starts(height, size, stride), grid_starts(width, size, stride)
    notes = []
    if score == "mean":
        plane = probs_small[0]
    else:
        plane = 1.0 - uncertainty_map(probs_small[0]) if probs_small.shape[0] == 1 else margin_map(probs_small)
        notes.append(f"score {score!r} taken on the stage-1 map at stage-1 scale (streaming approximation)")
    means = window_weights(ys, min(size, height), h1, height) @ plane.astype(np.float64) @ \
        window_weights(xs, min(size, width), w1, width).T / (min(size, height) * min(size, width))
    scores = np.abs(means - 0.5) if score == "mean" else (1.0 - means if score == "uncertainty" else means)
    priority = (scores if score != "uncertainty" else means).ravel()
    chosen = next_windows(priority, np.zeros(len(priority), bool), patches, threshold)
    return windows[chosen], scores.ravel()[chosen], notes


# --- stage 2 -----------------------------------------------------------------------------------------

def gather_tiled(source, boxes, channels):
    """float32 (n, h, w, C) crops of ``boxes`` read from the tiled file (mirrored past its edges)."""
    return np.stack([as_float_image(source.read_region(*map(int, box)), channels)[0] for box in boxes])


def gather_conditioned(source, boxes, channels, probs_small):
    """``gather_tiled`` crops with the stage-1 probabilities at their pixels appended as channels:
    float32 (n, h, w, C + K), for a conditioned S2 (the values in-memory stage 1 would upsample)."""
    height, width = source.shape[:2]
    crops = gather_tiled(source, boxes, channels)
    conditions = [stage1_at(probs_small, (height, width), mirror_index(y + np.arange(h), height),
                            mirror_index(x + np.arange(w), width)) for y, x, h, w in boxes]
    return np.concatenate([crops, np.stack(conditions).transpose(0, 2, 3, 1)], axis=3)


def stage2_streamed(source, runner, bundle, windows, batch_size, context, show, probs_small):
    """(window_probs (K, N, h, w), input boxes (N, 4)); a conditioned S2 also sees ``probs_small``."""
    if not len(windows):
        return np.empty((runner.config.out_channels, 0, 0, 0), np.float32), windows.copy()
    if bundle.conditioned:
        def gather(src, boxes):
            return gather_conditioned(src, boxes, bundle.in_channels, probs_small)
    else:
        def gather(src, boxes):
            return gather_tiled(src, boxes, bundle.in_channels)
    with bar(len(windows), "stage 2: windows", "window", show) as progress:
        return run_cores(runner, source, windows, context, bundle.s2_mean, bundle.s2_std, batch_size,
                         gather=gather, progress=progress.update)


def stage1_at(probs_small, shape, rows, cols):
    """float32 (K, len(rows), len(cols)): the stage-1 map ``probs_small`` (K, h1, w1) bilinearly
    upsampled to ``shape`` (H, W), at level-0 pixel ``rows`` x ``cols``, as two small matrix products."""
    height, width = shape
    h1, w1 = probs_small.shape[1:]
    row_weights, row_block = interpolation_matrix(rows, h1, height)
    col_weights, col_block = interpolation_matrix(cols, w1, width)
    block = probs_small[:, row_block][:, :, col_block]
    return np.matmul(np.matmul(row_weights, block), col_weights.T)


# --- the result, evaluated tile by tile --------------------------------------------------------------

@dataclass
class TiledResult:
    """A streamed prediction: the stage-1 map at stage-1 scale and the refined windows. The
    full-resolution probabilities and mask exist only region by region (``probs_at``, ``mask_at``)."""
    shape: tuple
    probs_small: np.ndarray
    windows: np.ndarray
    scores: np.ndarray
    window_probs: np.ndarray
    macs: dict
    seconds: dict
    view: np.ndarray = None
    options: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    tiles_read: int = 0

    def probs_at(self, rows, cols):
        """float32 (K, len(rows), len(cols)) probabilities at level-0 pixel ``rows`` x ``cols``
        (ascending integer arrays): bilinear stage 1 as two small matrix products, then the windows."""
        out = stage1_at(self.probs_small, self.shape, rows, cols)
        rows, cols = np.asarray(rows), np.asarray(cols)
        for n, (y, x, h, w) in enumerate(self.windows):
            r, c = np.flatnonzero((rows >= y) & (rows < y + h)), np.flatnonzero((cols >= x) & (cols < x + w))
            if len(r) and len(c):
                out[:, r[:, None], c[None, :]] = self.window_probs[:, n, rows[r, None] - y, cols[None, c] - x]
        return out

    def mask_at(self, rows, cols):
        """uint8 (len(rows), len(cols)) class ids (0/1 for binary) at level-0 ``rows`` x ``cols``."""
        probs = self.probs_at(rows, cols)
        return (probs[0] >= 0.5).astype(np.uint8) if len(probs) == 1 else probs.argmax(axis=0).astype(np.uint8)


def refuse_round_options(rounds=1, max_overlap=None, stride=None, size=None):
    """InputError for the options of rounds.py the streaming path does not offer yet: several rounds
    and overlapping candidates need the merged map at full resolution, which streaming never builds."""
    used = [name for name, value, default in (("rounds", rounds, 1), ("max_overlap", max_overlap, None))
            if value != default]
    if stride is not None and size is not None and stride < size:
        used.append("stride below the window side")
    if used:
        raise InputError(f"{', '.join(used)}: not available for streamed images yet; add --stream never "
                         "to read the image whole, or leave these options out.")


def window_cost(config, size, context, shape):
    """MACs of stage 2 on one window of side ``size`` (clipped to the image) seen with ``context``."""
    core = np.array([[0, 0, min(size, shape[0]), min(size, shape[1])]], dtype=np.int64)
    box = context_boxes(core, context, config.size_multiple, shape)[0][0]
    return count_macs(config, int(box[2]), int(box[3]))


def two_stage_tiled(path, bundle, patches=None, patch_size=None, score=None, stride=None, batch_size=None,
                    context=0, precision="fp32", compile=False, budget=None, budget_gmacs=None, rounds=1,
                    threshold=None, max_overlap=None, show_progress=False):
    """Two-stage segmentation of a tiled TIFF at ``path`` without reading it whole: a TiledResult.
    Options as ``pipeline.two_stage``, in one round on the grid: several rounds and overlapping
    strides are refused (InputError) for now. show_progress: tqdm bars on stderr."""
    check_round_options(budget, budget_gmacs, rounds, threshold, max_overlap)
    refuse_round_options(rounds, max_overlap)
    timer = Timer()
    s1, s2 = bundle.runners(check_precision(precision), compile)
    if patches is None and budget is None and budget_gmacs is None and threshold is None:
        patches = 16
    score = check_options(patches if patches is not None else 0, patch_size, stride, score, batch_size, context,
                          s2.config.out_channels)
    with TiledImage(path) as source:
        if source.dtype.type not in STREAM_DTYPES:
            raise InputError(f"{path}: {source.dtype} pixels cannot be streamed; convert to uint8, uint16 or float32.")
        height, width = source.shape[:2]
        size = patch_size or default_patch_size(height, width, patches or 16, s2.config.size_multiple)
        refuse_round_options(stride=stride, size=size)
        plan = RoundPlan(patches, size, stride, score, budget, budget_gmacs, 1, threshold, None)
        with timer("stage1"):
            probs_small, s1_hw, s1_macs, view, notes = stage1_streamed(source, s1, bundle, show_progress)
        limit = window_limit(patches, plan.budget_macs(baseline_macs(bundle, height, width)), s1_macs,
                             window_cost(s2.config, size, context, (height, width)))
        with timer("select"):
            windows, scores, select_notes = (select_streamed(
                probs_small, (height, width), limit, size, stride, score,
                threshold_priority(threshold, score) if threshold is not None else None)
                if limit else (np.empty((0, 4), np.int64), np.empty(0), []))
        select_notes += refine_notes(plan, len(windows), len(grid_windows(height, width, size, stride)), limit)
        with timer("stage2"):
            window_probs, boxes = stage2_streamed(source, s2, bundle, windows, batch_size, context, show_progress,
                                                  probs_small)
        tiles_read = source.tiles_read
    box_hw = tuple(int(v) for v in boxes[0, 2:]) if len(boxes) else None
    macs = cost_report(bundle, (height, width), s1_hw, box_hw, len(boxes))
    macs.update(stage1=s1_macs, total=s1_macs + macs["stage2"])
    macs["ratio"] = macs["total"] / macs["baseline"]
    options = {"patches": patches, "patch_size": int(size), "stride": int(stride or size), "score": score,
               "batch_size": batch_size or (auto_batch_size(*box_hw) if box_hw else None),
               "context": context, "precision": precision, "streamed": True,
               "s1_input": list(s1_hw), "s2_input": list(box_hw) if box_hw else None, **plan.report()}
    return TiledResult(shape=(height, width), probs_small=probs_small, windows=windows, scores=scores,
                       window_probs=window_probs, macs=macs, seconds=timer.total(), view=view, options=options,
                       notes=notes + select_notes, tiles_read=tiles_read)


# --- outputs, written tile by tile -------------------------------------------------------------------

OUTPUT_TILE = (512, 512)


def level_positions(start, count, level):
    """Level-0 pixel at the centre of level-``level`` pixels start .. start+count (nearest sampling)."""
    step = 2 ** level
    return (start + np.arange(count)) * step + step // 2


def write_mask_tiff(result, path, show=False):
    """The mask as a tiled pyramidal BigTIFF (uint8; 0/255 for binary, class ids otherwise), written
    one tile at a time; returns the foreground fraction at level 0."""
    binary = result.probs_small.shape[0] == 1
    foreground = [0]

    def region(level, y, x, h, w):
        mask = result.mask_at(level_positions(y, h, level), level_positions(x, w, level))
        if level == 0:
            foreground[0] += int(np.count_nonzero(mask))
        return mask * 255 if binary else mask

    height, width = result.shape
    with bar(pyramid_tiles(height, width, OUTPUT_TILE), "writing mask", "tile", show) as progress:
        write_pyramid(path, (height, width), np.uint8, region, tile=OUTPUT_TILE, progress=progress.update)
    return foreground[0] / (height * width)


def write_probs_tiff(result, path, show=False):
    """Probabilities (float32; the foreground's for binary, (H, W, K) for K classes) as a tiled
    pyramidal BigTIFF written one tile at a time."""
    classes = result.probs_small.shape[0]

    def region(level, y, x, h, w):
        probs = result.probs_at(level_positions(y, h, level), level_positions(x, w, level))
        return probs[0] if classes == 1 else np.moveaxis(probs, 0, -1)

    shape = result.shape if classes == 1 else result.shape + (classes,)
    with bar(pyramid_tiles(*result.shape, OUTPUT_TILE), "writing probabilities", "tile", show) as progress:
        write_pyramid(path, shape, np.float32, region, tile=OUTPUT_TILE, photometric="minisblack",
                      progress=progress.update)


def overview(result):
    """(image uint8 (h1, w1, C), mask (h1, w1), windows scaled) at stage-1 scale, for the overlay."""
    height, width = result.shape
    h1, w1 = result.view.shape[:2]
    rows = ((np.arange(h1) + 0.5) * height / h1).astype(np.int64)
    cols = ((np.arange(w1) + 0.5) * width / w1).astype(np.int64)
    windows = np.round(result.windows * np.array([h1 / height, w1 / width] * 2)).astype(np.int64)
    image = np.clip(result.view * 255 + 0.5, 0, 255).astype(np.uint8)
    return image, result.mask_at(rows, cols), windows
