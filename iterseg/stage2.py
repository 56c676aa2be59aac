"""Stage 2: run the full-resolution network on the selected windows, as batches, and paste back.

Glossary
    image    float32 (H, W, C) in [0, 1]
    probs    float32 (K, H, W) probabilities (stage 1, upsampled); a refined copy is returned
    windows  int64 (N, 4) of (y, x, h, w), equal h and w, in selection order
A conditioned S2 (Bundle.conditioned) sees, next to the image's channels, the stage-1 probabilities
at the same pixels; ``s2_feed`` builds what ``infer.run_cores`` needs for either kind.
"""
import numpy as np

from .infer import gather_boxes, paste_cores, run_cores


def s2_feed(bundle, stage1_probs):
    """(gather, mean, std) for running the bundle's S2 on boxes of an in-memory image.

    stage1_probs: float32 (K, H, W) stage-1 probabilities upsampled to the image; used only by a
    conditioned S2, whose crops then get them as K extra channels (normalised to [-1, 1])."""
    if not bundle.conditioned:
        return gather_boxes, bundle.mean, bundle.std
    condition = np.moveaxis(stage1_probs, 0, -1)

    def gather(image, boxes):
        return np.concatenate([gather_boxes(image, boxes), gather_boxes(condition, boxes)], axis=3)
    return gather, bundle.s2_mean, bundle.s2_std


def refine(model, image, probs, windows, feed, batch_size=None, context=0):
    """``probs`` with the windows replaced by stage-2 probabilities: (refined probs, input boxes (N, 4)).

    feed: (gather, mean, std) from ``s2_feed``. context: pixels of surrounding image each window is
    run with (0 = the window alone, as in the paper); the input boxes returned are what the cost
    report counts.
    """
    if len(windows) == 0:
        return probs, windows.copy()
    gather, mean, std = feed
    core_probs, boxes = run_cores(model, image, windows, context, mean, std, batch_size, gather)
    refined = probs.copy()
    paste_cores(refined, windows, core_probs)
    return refined, boxes
