"""Run a network on equal-sized boxes of an image, in batches, and return probabilities.

Glossary
    image    float32 (H, W, C) in [0, 1] (see prepare.py); normalised here by the bundle's mean/std
    boxes    int64 (N, 4) of (y, x, h, w), all the same h and w; a box may reach past the bottom or
             right edge of the image, where the image is mirrored (as np.pad mode 'reflect')
    probs    float32 (N, K, h, w): sigmoid of the logits for one output, softmax for several
Whole-image inference pads the image to the network's size multiple by mirroring at the bottom
and right. ``context_boxes`` places boxes so that a box's core gets the same output as the whole
image would give it, when the context reaches the network's receptive radius.
"""
import numpy as np
import torch

from .disk.tiff import mirror_index
from .kernels import grid_windows


def align_up(value, multiple):
    return -(-int(value) // multiple) * multiple


def logits_to_probs(logits):
    """(N, K, h, w) logits -> probabilities: sigmoid if K == 1 else softmax over K."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def gather_boxes(image, boxes):
    """Cut equal-sized ``boxes`` out of ``image`` (H, W, C) in one indexing operation: (N, h, w, C)."""
    height, width = image.shape[:2]
    box_h, box_w = int(boxes[0, 2]), int(boxes[0, 3])
    rows = mirror_index(boxes[:, 0, None] + np.arange(box_h), height)
    cols = mirror_index(boxes[:, 1, None] + np.arange(box_w), width)
    return image[rows[:, :, None], cols[:, None, :]]


# With batch_size None, a network call gets at most this many input pixels (and at most 16 boxes):
# on a CPU, batches of large windows leave the cache and run slower per pixel, in more memory
# (64 windows of 320 px: 6.9 s and 0.7 GB in batches of 4 against 10.4 s and 1.3 GB in batches of 16).
AUTO_BATCH_PIXELS = 2 ** 19
AUTO_BATCH_MAX = 16


def auto_batch_size(box_h, box_w):
    """Boxes per network call when none is given: up to 16, at most AUTO_BATCH_PIXELS pixels."""
    return max(1, min(AUTO_BATCH_MAX, AUTO_BATCH_PIXELS // (int(box_h) * int(box_w))))


def run_boxes(model, image, boxes, mean, std, batch_size, gather=gather_boxes, progress=None):
    """Probabilities of ``model`` on each box: float32 (N, K, h, w). One model call per batch of
    ``batch_size`` boxes (None: ``auto_batch_size``).

    gather(image, boxes) cuts the boxes as float32 (n, h, w, C) in [0, 1]; the default cuts them out
    of an in-memory array, stream.py reads them from a tiled file. progress(n) is told of each batch.
    """
    if batch_size is None:
        batch_size = auto_batch_size(boxes[0, 2], boxes[0, 3])
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    out = None
    with torch.inference_mode():
        for start in range(0, len(boxes), batch_size):
            crops = (gather(image, boxes[start:start + batch_size]) - mean) / std
            x = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
            probs = logits_to_probs(model(x).float()).numpy()
            if out is None:
                out = np.empty((len(boxes),) + probs.shape[1:], dtype=np.float32)
            out[start:start + len(probs)] = probs
            if progress:
                progress(len(probs))
    return out


def context_boxes(cores, context, multiple, image_shape):
    """Input boxes (N, 4) and core offsets (N, 2) inside them for equal-sized ``cores`` (N, 4).

    context 0: the box is the core, grown at the bottom/right to the size multiple.
    context > 0: the box holds ``context`` pixels around the core where the image allows, starts on
    the multiple grid, and stays inside the mirrored padding of the whole image, so that a context
    of at least the receptive radius reproduces the whole-image output on the core.
    """
    cores = np.asarray(cores, dtype=np.int64).reshape(-1, 4)
    core_h, core_w = int(cores[0, 2]), int(cores[0, 3])
    if context == 0:
        boxes = cores.copy()
        boxes[:, 2], boxes[:, 3] = align_up(core_h, multiple), align_up(core_w, multiple)
        return boxes, np.zeros((len(cores), 2), dtype=np.int64)
    starts, sizes = [], []
    for axis, core in ((0, core_h), (1, core_w)):
        padded = align_up(image_shape[axis], multiple)
        size = min(align_up(core + 2 * context + multiple - 1, multiple), padded)
        start = (np.maximum(cores[:, axis] - context, 0) // multiple) * multiple
        starts.append(np.minimum(start, padded - size))
        sizes.append(size)
    boxes = np.stack([starts[0], starts[1], np.full_like(starts[0], sizes[0]),
                      np.full_like(starts[0], sizes[1])], axis=1)
    return boxes, cores[:, :2] - boxes[:, :2]


def crop_cores(box_probs, offsets, core_h, core_w):
    """Cut each core (offsets (N, 2), size core_h x core_w) out of ``box_probs`` (N, K, h, w):
    float32 (K, N, core_h, core_w), ready to paste with ``probs[:, rows, cols] = ...``."""
    n = np.arange(len(box_probs))[:, None, None]
    rows = (offsets[:, 0, None] + np.arange(core_h))[:, :, None]
    cols = (offsets[:, 1, None] + np.arange(core_w))[:, None, :]
    return np.moveaxis(box_probs[n, :, rows, cols], -1, 0)


def paste_cores(probs, cores, core_probs):
    """Write ``core_probs`` (K, N, h, w) into ``probs`` (K, H, W) at ``cores`` (N, 4), in place.
    Where cores overlap, the later core in the list wins."""
    core_h, core_w = int(cores[0, 2]), int(cores[0, 3])
    rows = (cores[:, 0, None] + np.arange(core_h))[:, :, None]
    cols = (cores[:, 1, None] + np.arange(core_w))[:, None, :]
    probs[:, rows, cols] = core_probs


def run_cores(model, image, cores, context, mean, std, batch_size, gather=gather_boxes, progress=None):
    """Probabilities of ``model`` on equal-sized ``cores`` (N, 4) of ``image`` (H, W, C), each seen
    with ``context`` pixels around it: (core probabilities (K, N, h, w), input boxes (N, 4)).
    gather, progress: as ``run_boxes``."""
    multiple = model.config.size_multiple
    boxes, offsets = context_boxes(cores, context, multiple, image.shape[:2])
    box_probs = run_boxes(model, image, boxes, mean, std, batch_size, gather, progress)
    return crop_cores(box_probs, offsets, int(cores[0, 2]), int(cores[0, 3])), boxes


def run_whole(model, image, mean, std, tile=None, batch_size=1, progress=None, gather=gather_boxes):
    """Probabilities float32 (K, H, W) of ``model`` over the whole ``image`` (H, W, C).

    With ``tile`` (pixels) an image larger than a tile is processed in tiles of that core size, each
    seen with a context of the network's receptive radius: the untiled output up to float rounding,
    in bounded memory. progress(n) is told of each batch of tiles; gather: as ``run_boxes``.
    """
    height, width = image.shape[:2]
    if tile is None or (height <= tile and width <= tile):
        cores, context = np.array([[0, 0, height, width]], dtype=np.int64), 0
    else:
        cores = grid_windows(height, width, tile)
        context = align_up(model.config.receptive_radius, model.config.size_multiple)
    core_probs, _ = run_cores(model, image, cores, context, mean, std, batch_size, gather, progress)
    probs = np.empty((core_probs.shape[0], height, width), dtype=np.float32)
    paste_cores(probs, cores, core_probs)
    return probs
