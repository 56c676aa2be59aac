"""Loading every numba kernel before the first image, so that its timings leave compilation out."""
import numpy as np

from .area import block_means
from .windows import lowest_k, margin_map, uncertainty_map, window_means


def warm_up():
    """Load (or compile) every kernel once, on tiny inputs, so later calls are timed without it."""
    prob = np.full((2, 2), 0.5, dtype=np.float32)
    window_means(prob, 1)
    lowest_k(np.zeros(64, dtype=np.float64), 1)
    uncertainty_map(prob)
    margin_map(np.stack([prob, prob]))
    for dtype in (np.uint8, np.uint16):  # the stage-1 view of 8- and 16-bit images in memory
        block_means(np.zeros((2, 2, 3), dtype), 2, 2)
