"""Run a network on equal-sized boxes of a source, in batches, and return probabilities.

Glossary
    read     read(boxes) -> float32 (n, h, w, C) network input in [0, 1] (a source's ``read_boxes``,
             or that plus the coarse map for a conditioned S2); normalised here by mean / std
    boxes    int64 (N, 4) of (y, x, h, w), all the same h and w; a box may reach past the image's
             edge, where the source mirrors it (as np.pad mode 'reflect')
    windows  int64 (N, 4) equal-sized regions whose output is wanted; each runs inside a box
    probs    float32 (N, K, h, w): sigmoid of the logits for one output, softmax for several.
             Logits never leave this module.
``context_boxes`` places boxes so that a window gets the same output as the whole image would give
it, when the context reaches the network's receptive radius.
"""
import cv2
import numpy as np
import torch

from ..kernels import grid_windows
from .cost import align_up, count_macs
from .merge import paste

# With batch_size None, a network call gets at most this many input pixels (and at most 16 boxes):
# on a CPU, batches of large windows leave the cache and run slower per pixel, in more memory
# (64 windows of 320 px: 6.9 s and 0.7 GB in batches of 4 against 10.4 s and 1.3 GB in batches of 16).
AUTO_BATCH_PIXELS = 2 ** 19
AUTO_BATCH_MAX = 16


def logits_to_probs(logits):
    """(N, K, h, w) logits -> probabilities: sigmoid if K == 1 else softmax over K."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def auto_batch_size(box_h, box_w):
    """Boxes per network call when none is given: up to 16, at most AUTO_BATCH_PIXELS pixels."""
    return max(1, min(AUTO_BATCH_MAX, AUTO_BATCH_PIXELS // (int(box_h) * int(box_w))))


def normalised(crops, mean, std):
    """float32 (n, h, w, C): (crops - mean) / std per channel, for crops (n, h, w, C) in [0, 1].
    OpenCV's per-channel arithmetic for C <= 4 (NumPy's broadcast over a last axis of 3 ran at
    1/10 of its speed: 0.17 s for a whole HRF image); NumPy beyond."""
    channels = crops.shape[3]
    out = np.empty(crops.shape, np.float32)
    if channels > 4:
        np.subtract(crops, np.asarray(mean, np.float32), out=out)
        out *= 1 / np.asarray(std, np.float32)
        return out
    pad = (0.0,) * (4 - channels)
    offset = tuple(float(m) for m in mean) + pad
    scale = tuple(1 / float(s) for s in std) + pad
    for crop, into in zip(crops.astype(np.float32, copy=False), out, strict=True):
        if channels == 1:  # OpenCV takes one channel as (h, w)
            crop, into = crop[..., 0], into[..., 0]
        cv2.subtract(crop, offset, dst=into)
        cv2.multiply(into, scale, dst=into)
    return out


def run_boxes(model, read, boxes, mean, std, batch_size=None, progress=None):
    """Probabilities of ``model`` on each box: float32 (N, K, h, w), one model call per batch of
    ``batch_size`` boxes (None: ``auto_batch_size``). progress(n) is told of each batch."""
    batch_size = batch_size or auto_batch_size(boxes[0, 2], boxes[0, 3])
    out = None
    with torch.inference_mode():
        for start in range(0, len(boxes), batch_size):
            crops = normalised(read(boxes[start:start + batch_size]), mean, std)
            x = torch.from_numpy(crops).permute(0, 3, 1, 2)  # (n, C, h, w) in channels_last memory, no copy
            probs = logits_to_probs(model(x).float()).numpy()
            if out is None:
                out = np.empty((len(boxes),) + probs.shape[1:], dtype=np.float32)
            out[start:start + len(probs)] = probs
            if progress:
                progress(len(probs))
    return out


def context_boxes(windows, context, multiple, shape):
    """Input boxes (N, 4) and window offsets (N, 2) inside them for equal-sized ``windows`` (N, 4).

    context 0: the box is the window, grown at the bottom/right to the size multiple.
    context > 0: the box holds ``context`` pixels around the window where the image allows, starts
    on the multiple grid, and stays inside the mirrored padding of the whole image, so that a context
    of at least the receptive radius reproduces the whole-image output on the window.
    """
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    win_h, win_w = int(windows[0, 2]), int(windows[0, 3])
    if context == 0:
        boxes = windows.copy()
        boxes[:, 2], boxes[:, 3] = align_up(win_h, multiple), align_up(win_w, multiple)
        return boxes, np.zeros((len(windows), 2), dtype=np.int64)
    starts, sizes = [], []
    for axis, side in ((0, win_h), (1, win_w)):
        padded = align_up(shape[axis], multiple)
        size = min(align_up(side + 2 * context + multiple - 1, multiple), padded)
        start = (np.maximum(windows[:, axis] - context, 0) // multiple) * multiple
        starts.append(np.minimum(start, padded - size))
        sizes.append(size)
    boxes = np.stack([starts[0], starts[1], np.full_like(starts[0], sizes[0]),
                      np.full_like(starts[0], sizes[1])], axis=1)
    return boxes, windows[:, :2] - boxes[:, :2]


def box_shape(window_hw, context, multiple, shape):
    """(h, w) of the network input for one window of ``window_hw`` seen with ``context``."""
    window = np.array([[0, 0, *window_hw]], dtype=np.int64)
    return tuple(int(v) for v in context_boxes(window, context, multiple, shape)[0][0, 2:])


def window_cost(config, window_hw, context, shape):
    """(box (h, w), MACs of one pass on it) for a window of ``window_hw`` in an H x W image seen with
    ``context`` by a network of ``config``: the one window -> box -> MACs rule (``planned_windows``;
    custom.count_ahead for windows a user gives, tracing the network on that box)."""
    box_hw = box_shape(window_hw, context, config.size_multiple, shape)
    return box_hw, count_macs(config, *box_hw)


def planned_windows(plan, config, shape):
    """(grid int64 (N, 4) of the windows of ``plan`` (engine/settings.Plan) over an H x W image,
    box (h, w) of one seen with the plan's context, MACs of one pass of ``config`` on it): what a run
    chooses from and pays per window (engine/loop.py), what a cost without an image counts
    (api.planned_macs) and what users' networks are traced on before a run (custom.count_ahead)."""
    grid = grid_windows(*shape, plan.size, plan.stride)
    return (grid, *window_cost(config, grid[0, 2:], plan.settings.context, shape))


def crop_windows(box_probs, offsets, win_h, win_w):
    """Cut each window (offsets (N, 2), win_h x win_w) out of ``box_probs`` (N, K, h, w):
    float32 (K, N, win_h, win_w)."""
    n = np.arange(len(box_probs))[:, None, None]
    rows = (offsets[:, 0, None] + np.arange(win_h))[:, :, None]
    cols = (offsets[:, 1, None] + np.arange(win_w))[:, None, :]
    return np.moveaxis(box_probs[n, :, rows, cols], -1, 0)


def run_windows(model, read, shape, windows, context, mean, std, batch_size=None, progress=None):
    """Probabilities of ``model`` on equal-sized ``windows`` (N, 4) of an H x W source, each seen with
    ``context`` pixels around it: (window probabilities float32 (K, N, h, w), input boxes (N, 4))."""
    boxes, offsets = context_boxes(windows, context, model.config.size_multiple, shape)
    box_probs = run_boxes(model, read, boxes, mean, std, batch_size, progress)
    return crop_windows(box_probs, offsets, int(windows[0, 2]), int(windows[0, 3])), boxes


def run_whole(model, read, shape, mean, std, chunk=None, batch_size=1, progress=None):
    """Probabilities float32 (K, H, W) of ``model`` over a whole H x W source.

    With ``chunk`` (pixels) an image larger than a chunk is processed in square chunks of that side,
    each seen with a context of the network's receptive radius: the output of one pass up to float
    rounding, in bounded memory. Returns (probs, number of network inputs, their (h, w))."""
    height, width = shape
    if chunk is None or (height <= chunk and width <= chunk):  # one box: the image grown to the size multiple
        boxes = context_boxes(np.array([[0, 0, height, width]], dtype=np.int64), 0, model.config.size_multiple,
                              shape)[0]
        probs = run_boxes(model, read, boxes, mean, std, batch_size, progress)[0, :, :height, :width]
        return np.ascontiguousarray(probs), 1, tuple(int(v) for v in boxes[0, 2:])
    windows = grid_windows(height, width, chunk)
    context = align_up(model.config.receptive_radius, model.config.size_multiple)
    window_probs, boxes = run_windows(model, read, shape, windows, context, mean, std, batch_size, progress)
    probs = np.empty((window_probs.shape[0], height, width), dtype=np.float32)
    paste(probs, np.arange(height), np.arange(width), windows, window_probs)
    return probs, len(boxes), tuple(int(v) for v in boxes[0, 2:])
