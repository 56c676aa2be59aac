"""Tiled pyramidal (Big)TIFFs written tile by tile, atomically: no full level is ever in memory. The
writer of streamed results (their mask and probabilities, from ``result.mask_at`` / ``probs_at``)
and of test and benchmark images; the metadata comes from disk/ome.py, as for the in-memory writers.

Glossary
    shape    level-0 (H, W) or (H, W, C) as stored
    levels   level 0 is full resolution, level k is level 0 halved k times (rounded up)
    tile     (th, tw) the storage unit written
    region   region(level, y, x, h, w) -> the pixels (h, w[, C]) of that region of a level
"""
from pathlib import Path

import numpy as np
import tifffile

from .ome import ome_metadata, resolution_tags, stored_probs
from .outputs import OUTPUT_TILE, atomic_output, stored_mask


def pyramid_shapes(height, width, tile, smallest=None):
    """Level shapes (h, w) halving until a level fits in one tile (or ``smallest`` pixels a side)."""
    smallest = smallest or max(tile)
    shapes = [(height, width)]
    while max(shapes[-1]) > smallest:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def pyramid_tiles(height, width, tile, levels=None):
    """How many tiles ``write_pyramid`` writes for an H x W image."""
    return sum(-(-h // tile[0]) * -(-w // tile[1]) for h, w in pyramid_shapes(height, width, tile)[:levels])


def write_pyramid(path, shape, dtype, region, tile=(256, 256), compression="zlib", photometric=None,
                  levels=None, progress=None, ome=False, pixel_size=None, extratags=()):
    """Write a tiled pyramidal BigTIFF tile by tile, atomically; no full level is ever in memory.

    shape: level-0 (H, W) or (H, W, C). region(level, y, x, h, w) returns the pixels (h, w[, C]) of
    that region of pyramid level ``level`` (coordinates of that level; level k is level 0 halved k
    times, rounded up). levels: how many to write (default: until one fits in a tile).
    progress: called with the number of tiles written after each tile. ome: an OME-TIFF (OME-XML in
    the first page's description; the levels as SubIFDs), which QuPath, napari and Bio-Formats open as
    one pyramidal image. pixel_size: (y, x) micrometres per level-0 pixel, written as the OME
    PhysicalSizeY/X and as resolution tags (pixels per centimetre) of every level. extratags: tifffile
    extra tags of level 0 (a GeoTIFF's georeferencing, disk/metadata.py). Returns the level shapes.
    """
    path = Path(path)
    levels = pyramid_shapes(shape[0], shape[1], tile)[:levels]
    photometric = photometric or ("rgb" if len(shape) == 3 and shape[2] == 3 else "minisblack")
    metadata = ome_metadata(shape, photometric, pixel_size, path.name) if ome else None

    def tiles(level, h, w):
        for y in range(0, h, tile[0]):
            for x in range(0, w, tile[1]):
                yield np.ascontiguousarray(region(level, y, x, min(tile[0], h - y), min(tile[1], w - x)), dtype)
                if progress:
                    progress(1)

    with atomic_output(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=ome) as tif:
        for level, (h, w) in enumerate(levels):
            resolution = resolution_tags(pixel_size, (h / shape[0], w / shape[1]))
            tif.write(tiles(level, h, w), shape=(h, w) + tuple(shape[2:]), dtype=dtype, tile=tile,
                      compression=compression, photometric=photometric,
                      planarconfig="contig" if len(shape) == 3 else None,  # (h, w, C) tiles, any C
                      subifds=len(levels) - 1 if level == 0 else None, subfiletype=1 if level else 0,
                      metadata=metadata if level == 0 else None, extratags=list(extratags) if level == 0 else None,
                      **resolution)
    return levels


def level_positions(start, count, level):
    """Level-0 pixel at the centre of level-``level`` pixels start .. start+count (nearest sampling)."""
    step = 2 ** level
    return (start + np.arange(count)) * step + step // 2


def write_mask_pyramid(path, result, classes, progress=None, pixel_size=None, geotags=()):
    """The mask of ``result`` (anything with ``shape`` and ``mask_at(rows, cols)``) as a tiled
    pyramidal OME-TIFF (BigTIFF; uint8; 0/255 for binary, class ids otherwise), written one tile at a
    time; returns the foreground fraction at level 0. classes: the model's class count. pixel_size:
    (y, x) micrometres per pixel of the input, geotags: its GeoTIFF tags (disk/metadata.py), carried over."""
    foreground = [0]

    def region(level, y, x, h, w):
        mask = result.mask_at(level_positions(y, h, level), level_positions(x, w, level))
        if level == 0:
            foreground[0] += int(np.count_nonzero(mask))
        return stored_mask(mask, classes)

    write_pyramid(path, result.shape, np.uint8, region, tile=OUTPUT_TILE, progress=progress, ome=True,
                  pixel_size=pixel_size, extratags=geotags)
    return foreground[0] / (result.shape[0] * result.shape[1])


def write_probs_pyramid(path, result, classes, progress=None, pixel_size=None):
    """Probabilities (float32; the foreground's for binary, (H, W, K) for K classes) as a tiled
    pyramidal OME-TIFF (BigTIFF) written one tile at a time from ``result.probs_at``; pixel_size: see
    ``write_mask_pyramid``."""

    def region(level, y, x, h, w):
        probs = result.probs_at(level_positions(y, h, level), level_positions(x, w, level))
        return stored_probs(probs)

    shape = result.shape if classes == 2 else tuple(result.shape) + (classes,)
    write_pyramid(path, shape, np.float32, region, tile=OUTPUT_TILE, photometric="minisblack", progress=progress,
                  ome=True, pixel_size=pixel_size)
