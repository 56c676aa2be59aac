"""Synthetic test material: tiny random-weight bundles and generated images (no data, no training)."""
import cv2
import numpy as np
import torch

from iterseg.models import UNetConfig, untrained_bundle

SMALL = UNetConfig(in_channels=3, out_channels=1, depth=2, width=4)


def small_bundle(**overrides):
    """A binary bundle with a 2-level, 4-channel U-Net (size multiple 4) and random weights."""
    config = UNetConfig(**{**SMALL.__dict__, **overrides})
    bundle = untrained_bundle(config, seed=1)
    for model in (bundle.s1, bundle.s2):  # non-trivial batch-norm statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return bundle


def blob_image(height, width, seed=0, channels=3):
    """uint8 (H, W, C) image with a few bright discs on a noisy dark background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, channels), dtype=np.uint8)
    for _ in range(4):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(2, max(3, min(height, width) // 3)))
        cv2.circle(image, centre, radius, (200,) * channels, -1)
    return image
