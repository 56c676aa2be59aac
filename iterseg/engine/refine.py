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
"""
import numpy as np

from .cost import count_macs
from .infer import run_whole, run_windows


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


def refine(runner, bundle, source, coarse, windows, context=0, batch_size=None, progress=None):
    """Stage 2 on ``windows`` of ``source``, each seen with ``context`` pixels around it:
    (window_probs (K, N, h, w), boxes (N, 4)). runner: the bundle's S2 prepared for a precision."""
    read = s2_reader(source, coarse, bundle.conditioned)
    return run_windows(runner, read, source.shape, windows, context, *bundle.normalisation(runner.config),
                       batch_size, progress)


def refine_whole(runner, bundle, source, coarse, windows, chunk=None):
    """Stage 2 over the whole image, cut at ``windows``: (window_probs (K, N, h, w), MACs spent). What
    the engine runs when the windows' boxes would cost at least as much (then every window refined
    is the whole-image result, at no more cost); ``chunk`` as for infer.run_whole."""
    read = s2_reader(source, coarse, bundle.conditioned)
    probs, inputs, box_hw = run_whole(runner, read, source.shape, *bundle.normalisation(runner.config), chunk=chunk)
    window_probs = np.stack([probs[:, y:y + h, x:x + w] for y, x, h, w in np.asarray(windows, np.int64)], axis=1)
    return window_probs, inputs * count_macs(runner.config, *box_hw)
