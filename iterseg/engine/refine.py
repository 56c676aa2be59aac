"""Stage 2 (refine): the full-resolution network on the selected windows of a source, in batches.

A conditioned S2 (Bundle.conditioned) sees, after the image's channels, the coarse map at the same
pixels; ``s2_input`` is the one place that input is built (inference, baseline, training, int8
calibration).

Glossary
    crops         float32 (n, h, w, C) image pixels in [0, 1]
    coarse_crops  float32 (n, h, w, K) upsampled stage-1 probabilities at the same pixels
    windows       int64 (N, 4) of (y, x, h, w), equal-sized, in selection order
    window_probs  float32 (K, N, h, w) stage-2 probabilities (never logits)
    boxes         int64 (N, 4) the network inputs (windows plus context, grown to the size multiple)
``refine`` is the Refiner of a run in one process; iterseg/cluster.py has one that fans the windows
out to Dask workers. Both take a run's ``Stage2`` and the windows.
"""
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .cost import count_macs
from .infer import run_whole, run_windows
from .source import Source


@dataclass(frozen=True)
class Stage2:
    """What stage 2 of one run refines with: ``runner`` (the bundle's S2 prepared for a precision),
    ``bundle`` (its normalisation; whether S2 is conditioned), ``source``, ``coarse`` (the stage-1
    CoarseMap, engine/coarse.py), each window seen with ``context`` pixels around it, ``batch_size``
    windows per network call (None: infer.auto_batch_size)."""
    runner: Any
    bundle: Any
    source: Source
    coarse: Any
    context: int = 0
    batch_size: int | None = None


class Refiner(Protocol):
    """Runs stage 2 on windows: ``refine`` here, a fan-out to workers in iterseg/cluster.py."""

    def __call__(self, stage2: Stage2, windows: np.ndarray,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(window_probs float32 (K, N, h, w), boxes int64 (N, 4)) of ``windows`` (N, 4);
        progress(n) is told of every n windows done."""


def s2_input(crops, coarse_crops=None):
    """S2's input before normalisation: the crops, plus the coarse probabilities as K more channels
    for a conditioned S2 (normalised as Bundle.normalisation says, which maps them to [-1, 1])."""
    if coarse_crops is None:
        return crops
    return np.concatenate([crops, coarse_crops.astype(np.float32, copy=False)], axis=3)


def s2_reader(source, coarse, conditioned):
    """read(boxes) -> S2's input for ``boxes`` of ``source`` (with ``coarse`` when ``conditioned``)."""
    if not conditioned:
        return source.read_boxes
    return lambda boxes: s2_input(source.read_boxes(boxes), coarse.at_boxes(boxes))


def refine(stage2, windows, progress=None):
    """Stage 2 on ``windows`` (N, 4) of ``stage2.source`` (a Refiner): (window_probs (K, N, h, w),
    boxes (N, 4))."""
    runner, bundle, source = stage2.runner, stage2.bundle, stage2.source
    read = s2_reader(source, stage2.coarse, bundle.conditioned)
    return run_windows(runner, read, source.shape, windows, stage2.context, *bundle.normalisation(runner.config),
                       stage2.batch_size, progress)


def refine_whole(stage2, windows, chunk=None):
    """Stage 2 over the whole image, cut at ``windows``: (window_probs (K, N, h, w), MACs spent). What
    the engine runs when the windows' boxes would cost at least as much (then every window refined
    is the whole-image result, at no more cost); ``chunk`` as for infer.run_whole."""
    runner, bundle, source = stage2.runner, stage2.bundle, stage2.source
    read = s2_reader(source, stage2.coarse, bundle.conditioned)
    probs, inputs, box_hw = run_whole(runner, read, source.shape, *bundle.normalisation(runner.config), chunk=chunk)
    window_probs = np.stack([probs[:, y:y + h, x:x + w] for y, x, h, w in np.asarray(windows, np.int64)], axis=1)
    return window_probs, inputs * count_macs(runner.config, *box_hw)
