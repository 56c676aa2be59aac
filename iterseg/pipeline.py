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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .flops import cost_report
from .infer import auto_batch_size, context_boxes, run_whole
from .io import read_image
from .kernels import grid_windows, warm_up
from .models import DEFAULT_MODEL, load_bundle
from .prepare import as_float_image
from .runtime import check_precision
from .options import check_options, check_windows
from .select import default_patch_size, select_windows
from .stage1 import stage1, stage1_size
from .stage2 import refine
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


def two_stage(image, bundle, patches=16, patch_size=None, score=None, stride=None, batch_size=None,
              context=0, windows=None, precision="fp32", compile=False):
    """Segment ``image`` with ``bundle``: stage 1 everywhere, stage 2 on the ``patches`` least
    certain windows of side ``patch_size`` (default ceil(max(H, W) / patches) rounded up to the
    size multiple), scored by ``score`` on a grid with step ``stride`` (default: the window side).
    ``patches=0`` returns the upsampled stage-1 result. ``batch_size``: windows per stage-2 network
    call (default: up to 16 and at most 0.5 Mpx, see infer.auto_batch_size). ``windows`` (int64 (N, 4), equal sizes)
    refines exactly those windows instead of selecting (their scores are then NaN). ``precision``
    and ``compile``: see runtime.py. Returns a Result."""
    timer = Timer()
    s1, s2 = bundle.runners(check_precision(precision), compile)
    score = check_options(patches, patch_size, stride, score, batch_size, context, s2.config.out_channels)
    image, notes = as_float_image(image, bundle.in_channels)
    height, width = image.shape[:2]
    if windows is not None:
        windows = check_windows(windows, height, width)
        patches, patch_size = len(windows), int(windows[0, 2]) if len(windows) else 1
    patch_size = patch_size or default_patch_size(height, width, patches, s2.config.size_multiple)
    with timer("stage1"):
        probs, s1_hw = stage1(s1, image, bundle.s1_scale, bundle.mean, bundle.std)
    with timer("select"):
        if windows is not None:
            scores = np.full(len(windows), np.nan)
        elif patches:
            windows, scores = select_windows(probs, patches, patch_size, stride, score)
        else:
            windows, scores = np.empty((0, 4), np.int64), np.empty(0)
    if len(windows) < patches:
        notes.append(f"{patches} patches asked, the grid has only {len(windows)} windows: all refined")
    with timer("stage2"):
        probs, boxes = refine(s2, image, probs, windows, bundle.mean, bundle.std, batch_size, context)
    box_hw = tuple(int(v) for v in boxes[0, 2:]) if len(boxes) else None
    macs = cost_report(s1.config, s2.config, (height, width), s1_hw, box_hw, len(boxes))
    options = {"patches": patches, "patch_size": int(patch_size), "stride": int(stride or patch_size),
               "score": score, "batch_size": batch_size or (auto_batch_size(*box_hw) if box_hw else None),
               "context": context, "precision": precision,
               "s1_input": list(s1_hw), "s2_input": list(box_hw) if box_hw else None}
    return finish(probs, windows, scores, macs, timer, options, notes)


def baseline(image, bundle, batch_size=1, tile=None, precision="fp32", compile=False):
    """The full-resolution network (stage 2's) over the whole image. ``tile`` (pixels) processes it
    in tiles with receptive-field context, which leaves the output unchanged up to float rounding;
    by default only images above MAX_WHOLE_PIXELS are tiled (in BASELINE_TILE tiles)."""
    timer = Timer()
    s2 = bundle.runners(check_precision(precision), compile)[1]
    image, notes = as_float_image(image, bundle.in_channels)
    height, width = image.shape[:2]
    if tile is None and height * width > MAX_WHOLE_PIXELS:
        tile = BASELINE_TILE
    with timer("stage2"):
        probs = run_whole(s2, image, bundle.mean, bundle.std, tile=tile, batch_size=batch_size)
    macs = cost_report(bundle.s1.config, bundle.s2.config, (height, width), None, (height, width), 1)
    for name in ("stage1", "select"):
        timer.seconds[name] = 0.0
    return finish(probs, np.empty((0, 4), np.int64), np.empty(0), macs, timer,
                  {"baseline": True, "tile": tile, "precision": precision}, notes)


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

    def predict(self, image, patches=16, **options):
        """Two-stage segmentation of ``image`` (path or array); options as ``two_stage``."""
        return two_stage(self._image(image), self.bundle, patches, **{**self.defaults, **options})

    def predict_tiled(self, path, patches=16, show_progress=False, **options):
        """Two-stage segmentation of a tiled (Big)TIFF read region by region, in memory that grows
        with the refined area, not the image: a stream.TiledResult (options as ``two_stage``)."""
        return two_stage_tiled(path, self.bundle, patches, show_progress=show_progress,
                               **{**self.defaults, **options})

    def predict_baseline(self, image, **options):
        """The full-resolution model over the whole image; options as ``baseline``."""
        return baseline(self._image(image), self.bundle, **{**self.defaults, **options})

    def macs(self, height, width, patches=16, patch_size=None, context=0):
        """The cost report for an H x W image without running anything (windows of the default grid)."""
        s1, s2 = self.bundle.s1.config, self.bundle.s2.config
        size = patch_size or default_patch_size(height, width, patches, s2.size_multiple)
        n = min(patches, len(grid_windows(height, width, size)))
        core = np.array([[0, 0, min(size, height), min(size, width)]], dtype=np.int64)
        box = context_boxes(core, context, s2.size_multiple, (height, width))[0][0]
        return cost_report(s1, s2, (height, width), stage1_size(height, width, self.bundle.s1_scale),
                           tuple(box[2:]), n)


def load(name_or_path=DEFAULT_MODEL, precision="fp32", compile=False):
    """A Segmenter for an embedded model name (default 'ph2') or a bundle file path, running its
    networks in ``precision`` ('fp32' or 'bf16'), optionally through torch.compile (runtime.py)."""
    return Segmenter(load_bundle(name_or_path), source=name_or_path, precision=precision, compile=compile)
