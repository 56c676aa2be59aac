"""The Python API: ``load`` a model, then ``Segmenter.predict`` images (paths, arrays, tensors or
tiled TIFFs streamed region by region). A thin layer over engine/loop.py.

Glossary: see engine/loop.py (Result: mask, probs, windows, scores, macs, seconds, options, notes).
"""
import contextlib
import os
from typing import Any

import numpy as np

from .engine import loop
from .engine.cost import cost_report, count_macs, stage1_size
from .engine.infer import box_shape
from .engine.settings import DEFAULT_PATCHES, Settings, default_window_side
from .engine.source import open_source
from .kernels import grid_windows, warm_up
from .model.runtime import check_precision
from .model.store import DEFAULT_MODEL, load_bundle

Result = loop.Result
Image = Any  # a path (str or os.PathLike), an (H, W[, C]) array, a torch tensor, or an engine source


@contextlib.contextmanager
def opened(image: Any, bundle, stream: bool = False):
    """The source for ``image`` (see engine/source.open_source), closed afterwards if opened here."""
    source = open_source(image, bundle.in_channels, stream)
    try:
        yield source
    finally:
        if source is not image:
            source.close()


def two_stage(image: Image, bundle, windows: np.ndarray | None = None, stream: bool = False,
              show_progress: bool = False, **options) -> Result:
    """Segment ``image`` (path, array, tensor or Source) with ``bundle``: stage 1 everywhere, stage 2
    on the windows that most need it. ``stream``: read a tiled TIFF path region by region.
    options: see ``Segmenter.predict``. Returns a Result."""
    settings = Settings.from_options(**options)
    with opened(image, bundle, stream) as source:
        return loop.two_stage(source, bundle, settings, windows, show_progress)


def baseline(image: Image, bundle, tile: int | None = None, batch_size: int = 1, **options) -> Result:
    """The full-resolution model over the whole ``image``; a Result with no windows (ratio 1)."""
    settings = Settings.from_options(**options)
    with opened(image, bundle) as source:
        return loop.baseline(source, bundle, settings, tile, batch_size)


class Segmenter:
    """A loaded bundle with the methods of the public contract (see DESIGN.md)."""

    def __init__(self, bundle, source: str | None = None, precision: str = "fp32", compile: bool = False):
        self.bundle = bundle
        self.source = str(source) if source is not None else bundle.name
        self.defaults = {"precision": check_precision(precision), "compile": bool(compile)}
        warm_up()  # numba kernels load once here, not inside the first image's timings

    def __repr__(self):
        return (f"Segmenter({self.source!r}, classes={list(self.bundle.class_names)}, "
                f"precision={self.defaults['precision']!r})")

    def predict(self, image: Image, patches: int | None = None, **options) -> Result:
        """Two-stage segmentation of ``image`` (path, (H, W[, C]) array or tensor): a Result.

        patches: how many windows (default: the model's, chosen from its sweep (`iterseg models`), else
        16; with a budget or threshold no cap but theirs; 0 = stage 1 only). patch_size: window side
        (default: the model's, else ceil(max(H, W) / patches) rounded up to the size multiple).
        score: 'mean' | 'uncertainty' (higher = refine first). stride: grid step
        (default the side; below it grid windows overlap, at most ``max_overlap`` (default 0.25) of a
        window's area is shared, and overlapping results are blended). budget / budget_gmacs: at most
        this fraction of the baseline's MACs / this many GMACs in all. rounds: choose the windows in R
        rounds, re-scoring the merged map after each. threshold: refine only windows scoring above it.
        context: pixels of image stage 2 sees around each window. windows: refine exactly these.
        batch_size: windows per network call. precision, compile: see model/runtime.py.
        stream: read a tiled TIFF path region by region (see ``predict_tiled``)."""
        return two_stage(image, self.bundle, patches=patches, **{**self.defaults, **options})

    def predict_tiled(self, path: str | os.PathLike, patches: int | None = None, show_progress: bool = False,
                      **options) -> Result:
        """``predict`` of a tiled (Big)TIFF read region by region, in memory that grows with the refined
        area, not the image; use ``result.mask_at`` / ``probs_at`` rather than the whole map."""
        return self.predict(path, patches, stream=True, show_progress=show_progress, **options)

    def predict_baseline(self, image: Image, **options) -> Result:
        """The full-resolution model over the whole image; options: tile, batch_size, precision."""
        return baseline(image, self.bundle, **{**self.defaults, **options})

    def macs(self, height: int, width: int, patches: int | None = None, patch_size: int | None = None,
             context: int = 0) -> dict:
        """The cost report for an H x W image without running anything (windows of the default grid;
        patches: the model's default count unless given)."""
        s1, s2 = self.bundle.s1.config, self.bundle.s2.config
        shape = (height, width)
        if patches is None:
            patches = DEFAULT_PATCHES if self.bundle.patches is None else self.bundle.patches
        size = patch_size or self.bundle.window or default_window_side(shape, patches, s2.size_multiple)
        count = min(patches, len(grid_windows(height, width, size)))
        window_hw = (min(size, height), min(size, width))
        return cost_report(self.bundle, shape, count_macs(s1, *stage1_size(shape, self.bundle.s1_scale)),
                           box_shape(window_hw, context, s2.size_multiple, shape), count)


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, precision: str = "fp32", compile: bool = False) -> Segmenter:
    """A Segmenter for an embedded model name (default 'ph2') or a bundle file path, running its
    networks in ``precision`` ('fp32', 'bf16' or 'int8'), optionally through torch.compile."""
    return Segmenter(load_bundle(name_or_path), source=name_or_path, precision=precision, compile=compile)
