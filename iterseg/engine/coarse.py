"""Stage 1 (the coarse map): the low-resolution network over the whole image, at stage-1 scale,
and its bilinear upsampling to full resolution, whole or at any pixels.

Glossary
    probs    float32 (K, h1, w1) stage-1 probabilities at stage-1 scale (never logits)
    shape    (H, W) of the full-resolution image; (h1, w1) = shape times s1_scale, rounded, >= 1
    rows, cols  int arrays of full-resolution pixel positions (mirrored positions allowed)
Upsampling follows OpenCV's INTER_LINEAR convention exactly; ``full`` calls OpenCV, ``at`` is its
separable twin for a few pixels of a huge image (equal up to float rounding).
"""
from dataclasses import dataclass

import cv2
import numpy as np

from ..disk.tiff import mirror_index
from ..kernels import grid_windows
from .cost import align_up, count_macs, stage1_size
from .infer import run_whole, run_windows
from .merge import paste
from .source import gather_boxes

# Stage 1 runs whole up to S1_WHOLE_PIXELS for a width-16 U-Net (about 0.75 GB of activations;
# activations grow with the width, so a width-8 stage 1 runs whole on twice the pixels) and above it in
# equal chunks of at most S1_CHUNK pixels a side, each with receptive-field context, which costs MACs.
# Whole is much faster where it fits: a 1250^2 view took 2.9 s whole and 11.2 s in 1024 px chunks.
S1_WHOLE_PIXELS = 1300 ** 2
S1_WHOLE_WIDTH = 16
S1_CHUNK = 1024  # a chunk: a piece of stage 1's input run on its own (a tile is a TIFF's storage unit)


def linear_taps(positions, small, full):
    """Bilinear source taps for full-resolution ``positions`` on an axis of ``full`` pixels resampled
    from ``small``: (index0, index1, weight of index1), as cv2.resize INTER_LINEAR computes them."""
    source = (np.asarray(positions, np.float64) + 0.5) * (small / full) - 0.5
    index0 = np.floor(source).astype(np.int64)
    frac = source - index0
    frac[index0 < 0] = 0
    index0 = np.clip(index0, 0, small - 1)
    frac[index0 >= small - 1] = 0
    return index0, np.minimum(index0 + 1, small - 1), frac.astype(np.float32)


@dataclass
class CoarseMap:
    """Stage-1 probabilities ``probs`` (K, h1, w1) of an image of ``shape`` (H, W)."""
    probs: np.ndarray
    shape: tuple

    def at(self, rows, cols):
        """float32 (K, len(rows), len(cols)): the upsampled map at full-resolution ``rows`` x ``cols``."""
        (h1, w1), (height, width) = self.probs.shape[1:], self.shape
        r0, r1, rf = linear_taps(rows, h1, height)
        c0, c1, cf = linear_taps(cols, w1, width)
        block = self.probs[:, r0] * (1 - rf)[:, None] + self.probs[:, r1] * rf[:, None]
        return np.ascontiguousarray(block[:, :, c0] * (1 - cf) + block[:, :, c1] * cf, dtype=np.float32)

    def full(self):
        """float32 (K, H, W) the whole upsampled map (OpenCV)."""
        height, width = self.shape
        if self.probs.shape[1:] == (height, width):
            return self.probs.copy()
        up = cv2.resize(np.ascontiguousarray(self.probs.transpose(1, 2, 0)), (width, height),
                        interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(up.reshape(height, width, -1).transpose(2, 0, 1))

    def at_boxes(self, boxes):
        """float32 (N, h, w, K) the upsampled map inside equal-sized ``boxes`` (N, 4), mirrored past
        the image's edges like the pixels a source reads there."""
        height, width = self.shape
        out = [self.at(mirror_index(y + np.arange(h), height), mirror_index(x + np.arange(w), width))
               for y, x, h, w in np.asarray(boxes, np.int64)]
        return np.stack(out).transpose(0, 2, 3, 1)


def s1_chunk(h1, w1, width=S1_WHOLE_WIDTH):
    """Chunk side for a stage-1 view of h1 x w1 and a U-Net of ``width`` (None: run it whole): as few
    equal chunks as fit S1_CHUNK."""
    if h1 * w1 * width <= S1_WHOLE_PIXELS * S1_WHOLE_WIDTH:
        return None
    return max(-(-side // -(-side // S1_CHUNK)) for side in (h1, w1))


def run_in_bands(runner, read, shape, mean, std, chunk, progress=None):
    """engine/infer.run_whole in chunks of ``chunk`` px with receptive-field context, one row of chunks
    at a time: the same probabilities float32 (K, h1, w1), with the chunks' outputs of one row in
    memory instead of all (a 40000 x 30000 slide's 3750 x 5000 view: 20 chunks, 0.2 GB less).
    Returns (probs, number of network inputs, their (h, w))."""
    height, width = shape
    windows = grid_windows(height, width, chunk)
    context = align_up(runner.config.receptive_radius, runner.config.size_multiple)
    probs = None
    for top in np.unique(windows[:, 0]):
        band = windows[windows[:, 0] == top]
        band_probs, boxes = run_windows(runner, read, shape, band, context, mean, std, 1, progress)
        if probs is None:
            probs = np.empty((band_probs.shape[0], height, width), dtype=np.float32)
        paste(probs, np.arange(height), np.arange(width), band, band_probs)
    return probs, len(windows), tuple(int(v) for v in boxes[0, 2:])


def stage1(source, runner, scale, mean, std, progress=None):
    """Run stage 1 on ``source``: (CoarseMap, MACs as run, the stage-1 view (h1, w1, C), notes).

    runner: a network returning logits (the bundle's S1 prepared for a precision, model/runtime.py);
    scale: the bundle's s1_scale; mean, std: its input normalisation. progress(n) is told of rows
    read and chunks run."""
    h1, w1 = stage1_size(source.shape, scale)
    view, note = source.view(h1, w1, progress)
    chunk = s1_chunk(h1, w1, runner.config.width)
    run = run_in_bands if chunk else run_whole
    probs, count, box_hw = run(runner, lambda boxes: gather_boxes(view, boxes), (h1, w1), mean, std, chunk=chunk,
                               progress=progress)
    notes = [note] if note else []
    if chunk:
        notes.append(f"stage 1 ran in {count} chunks of {chunk} px with receptive-field context "
                     f"({align_up(runner.config.receptive_radius, runner.config.size_multiple)} px)")
    return CoarseMap(probs, tuple(source.shape)), count * count_macs(runner.config, *box_hw), view, notes
