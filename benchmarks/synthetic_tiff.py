"""Synthetic tiled (pyramidal) BigTIFFs of any size, generated tile by tile (no full image in memory).

The picture is a function of level-0 coordinates: a skin-coloured background with smooth shading and
noise, and dark discs with soft edges (lesion-like, so the embedded PH2 model has something to
segment). Pyramid level k samples the same picture every 2**k pixels, so levels agree with level 0.

    python -m benchmarks.synthetic_tiff big.tif --size 20000x20000
"""
import argparse
import sys

import numpy as np

from iterseg.disk.pyramid import write_pyramid

BACKGROUND = np.array([205, 160, 140], np.float32)
LESION = np.array([95, 55, 45], np.float32)


def discs(height, width, seed, count=None):
    """(centre_y, centre_x, radius) float arrays of the dark discs, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    count = count or max(4, int(height * width / 4e6))  # about one disc per 2000 x 2000 pixels
    radius = rng.uniform(0.02, 0.08, count) * min(height, width) ** 0.5 * 30
    return rng.uniform(0, height, count), rng.uniform(0, width, count), np.minimum(radius, min(height, width) / 4)


def picture(y, x, h, w, step, shape, seed, blobs):
    """RGB uint8 (h, w, 3) of the region whose top-left level-0 pixel is (y, x), sampled every ``step``."""
    rows = (y + np.arange(h) * step)[:, None].astype(np.float32)
    cols = (x + np.arange(w) * step)[None, :].astype(np.float32)
    shade = 0.9 + 0.1 * np.cos(rows / shape[0] * 3.0) * np.cos(cols / shape[1] * 2.0)
    lesion = np.zeros((h, w), np.float32)
    cy, cx, radius = blobs
    near = (np.abs(cy - (y + h * step / 2)) < radius + h * step) & (np.abs(cx - (x + w * step / 2)) < radius + w * step)
    for centre_y, centre_x, r in zip(cy[near], cx[near], radius[near], strict=True):
        distance = np.sqrt((rows - centre_y) ** 2 + (cols - centre_x) ** 2)
        lesion = np.maximum(lesion, np.clip((r - distance) / (0.1 * r) + 0.5, 0, 1))
    colour = BACKGROUND * (1 - lesion[..., None]) + LESION * lesion[..., None]
    noise = np.random.default_rng([seed, y, x, step]).normal(0, 6, (h, w, 1)).astype(np.float32)
    return np.clip(colour * shade[..., None] + noise, 0, 255).astype(np.uint8)


def write_synthetic_tiff(path, height, width, seed=0, tile=(512, 512), pyramid=True, compression="jpeg"):
    """Write the synthetic picture as a tiled (pyramidal when ``pyramid``) BigTIFF; returns level shapes."""
    blobs = discs(height, width, seed)

    def region(level, y, x, h, w):
        step = 2 ** level
        return picture(y * step, x * step, h, w, step, (height, width), seed, blobs)

    return write_pyramid(path, (height, width, 3), np.uint8, region, tile=tile, compression=compression,
                         levels=None if pyramid else 1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_tiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--size", default="20000x20000", help="HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pyramid", action="store_true")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    levels = write_synthetic_tiff(args.path, height, width, args.seed, pyramid=not args.no_pyramid)
    print(f"{args.path}: levels {levels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
