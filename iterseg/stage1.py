"""Stage 1: the low-resolution network over the whole image, upsampled back to full size.

Glossary
    image    float32 (H, W, C) in [0, 1]
    probs    float32 (K, H, W) probabilities (K = 1 for a binary model: foreground probability)
    small    (h1, w1) = the image size times ``scale``, rounded, at least 1 x 1
"""
import cv2
import numpy as np

from .infer import run_whole


def stage1_size(height, width, scale):
    """Size (h1, w1) of the stage-1 input for an H x W image."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(array, height, width, interpolation):
    """Resize an (h, w, C) array with OpenCV, keeping the channel axis even for C == 1."""
    out = cv2.resize(array, (width, height), interpolation=interpolation)
    return out.reshape(height, width, array.shape[2])


def stage1(model, image, scale, mean, std):
    """Low-resolution probabilities upsampled (bilinear) to the image: (probs (K, H, W), (h1, w1))."""
    height, width = image.shape[:2]
    h1, w1 = stage1_size(height, width, scale)
    small = resize(image, h1, w1, cv2.INTER_AREA) if (h1, w1) != (height, width) else image
    probs_small = run_whole(model, small, mean, std)
    if (h1, w1) == (height, width):
        return probs_small, (h1, w1)
    up = resize(np.ascontiguousarray(probs_small.transpose(1, 2, 0)), height, width, cv2.INTER_LINEAR)
    return np.ascontiguousarray(up.transpose(2, 0, 1)), (h1, w1)
