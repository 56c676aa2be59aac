"""Synthetic Aperio-style .svs slides, written tile by tile with tifffile (no full level in memory).

The layout Aperio scanners write and tifffile / tiffslide / OpenSlide read as SVS: level 0 as tiled
JPEG with the Aperio description (``AppMag = 20|MPP = 0.499``) in the first page, a stripped
thumbnail (the smallest level's picture) as the second page, then each further level (downsampled
by 4) as a tiled page of its own.
The picture is benchmarks/synthetic_tiff.picture (lesion-like discs), sampled at each level.

    python -m benchmarks.synthetic_slide slide.svs --size 30000x40000
"""
import argparse
import sys

import numpy as np
import tifffile

from iterseg.disk.outputs import atomic_output

from .synthetic_tiff import discs, picture

APERIO = "Aperio Image Library v12.0.15 \r\n"


def aperio_description(width, height, tile, mpp, magnification, level_size=None):
    """The ImageDescription Aperio writes: level 0 names its tiling, the others their size."""
    if level_size is None:
        head = f"{APERIO}{width}x{height} [0,0 {width}x{height}] ({tile[1]}x{tile[0]}) JPEG/RGB Q=70"
    else:
        head = f"{APERIO}{width}x{height} -> {level_size[1]}x{level_size[0]} - "
    return f"{head}|AppMag = {magnification:g}|MPP = {mpp:g}|Filename = synthetic"


def write_svs(path, height, width, region, tile=(512, 512), mpp=0.499, magnification=20, levels=3,
              downsample=4, compression="jpeg"):
    """Write an SVS-like slide atomically. region(step, y, x, h, w) returns RGB uint8 (h, w, 3)
    of the level whose pixels are ``step`` level-0 pixels apart, at that level's (y, x). Returns the
    level shapes (h, w)."""
    shapes = [(-(-height // downsample ** k), -(-width // downsample ** k)) for k in range(levels)]

    def tiles(step, h, w):
        for y in range(0, h, tile[0]):
            for x in range(0, w, tile[1]):
                block = np.zeros(tile + (3,), np.uint8)  # edge tiles are padded, as scanners do
                part = region(step, y, x, min(tile[0], h - y), min(tile[1], w - x))
                block[:part.shape[0], :part.shape[1]] = part
                yield block

    thumb_step, thumb_shape = downsample ** (levels - 1), shapes[-1]  # the smallest level's picture, in strips
    with atomic_output(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=height * width > 2 ** 28) as tif:
        for index, (h, w) in enumerate(shapes):
            step = downsample ** index
            description = aperio_description(width, height, tile, mpp, magnification, None if index == 0 else (h, w))
            tif.write(tiles(step, h, w), shape=(h, w, 3), dtype=np.uint8, tile=tile, compression=compression,
                      photometric="rgb", description=description, metadata=None, subfiletype=0)
            if index == 0:
                thumbnail = region(thumb_step, 0, 0, *thumb_shape)
                tif.write(thumbnail, photometric="rgb", compression=compression, metadata=None,
                          description=aperio_description(width, height, tile, mpp, magnification, thumb_shape))
    return shapes


def write_synthetic_svs(path, height, width, seed=0, **options):
    """The lesion-like picture of benchmarks/synthetic_tiff as an SVS-like slide."""
    blobs = discs(height, width, seed)
    return write_svs(path, height, width,
                     lambda step, y, x, h, w: picture(y * step, x * step, h, w, step, (height, width), seed, blobs),
                     **options)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_slide", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--size", default="30000x40000", help="HEIGHTxWIDTH")
    parser.add_argument("--mpp", type=float, default=0.499)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    shapes = write_synthetic_svs(args.path, height, width, args.seed, mpp=args.mpp)
    print(f"{args.path}: levels {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
