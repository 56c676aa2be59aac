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


def disc_pair(height, width, seed):
    """(uint8 RGB image, uint8 0/255 mask): bright discs (the foreground) on a noisy background."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(mask, centre, int(rng.integers(4, max(5, min(height, width) // 4))), 255, -1)
    image = rng.integers(20, 70, (height, width, 3)).astype(np.uint8)
    image[mask > 0] = rng.integers(150, 220, (int((mask > 0).sum()), 3)).astype(np.uint8)
    return image, mask


SPEC_TEMPLATE = """name: syn
images: SYN/images/*.png
match: 'SYN/images/(?P<id>img\\d+)'
mask: SYN/masks/{id}.png
foreground: 255
fov: null
augment: {hflip: true, vflip: true, rotate90: true}
split:
  seed: 0
  test_fraction: 0.25
"""


def write_dataset(root, count=8, height=96, width=128):
    """A synthetic binary dataset under root/SYN and its spec file root/syn.yaml; returns the spec path."""
    (root / "SYN" / "images").mkdir(parents=True)
    (root / "SYN" / "masks").mkdir(parents=True)
    for i in range(count):
        image, mask = disc_pair(height, width, seed=i)
        cv2.imwrite(str(root / "SYN" / "images" / f"img{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "SYN" / "masks" / f"img{i}.png"), mask)
    spec = root / "syn.yaml"
    spec.write_text(SPEC_TEMPLATE, encoding="utf-8")
    return spec


def write_tiled(path, image, tile=(64, 64), pyramid=False):
    """Write ``image`` (H, W[, C]) as a tiled BigTIFF; with ``pyramid``, levels made by INTER_AREA halving."""
    from iterseg.tiled import pyramid_shapes, write_pyramid
    levels = [image]
    if pyramid:
        for h, w in pyramid_shapes(image.shape[0], image.shape[1], tile)[1:]:
            levels.append(cv2.resize(levels[-1], (w, h), interpolation=cv2.INTER_AREA))
    write_pyramid(path, image.shape, image.dtype, lambda level, y, x, h, w: levels[level][y:y + h, x:x + w],
                  tile=tile, levels=len(levels))
    return path
