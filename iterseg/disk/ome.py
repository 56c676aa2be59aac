"""The metadata of every TIFF iterseg writes, in one place: OME-XML (axes, physical pixel size and a
UUID derived from the file's name and shape, never tifffile's random one, so that a rerun writes the
same bytes) and the resolution tags. Used by the in-memory writers (disk/outputs.py) and the
pyramid writer (disk/pyramid.py) alike, so an output has the same axes whichever wrote it.

Glossary
    shape       (H, W) or (H, W, K) as stored: K samples per pixel (e.g. K classes' probabilities)
    axes        "YX" for (H, W), "YXS" for (H, W, K)
    pixel_size  (y, x) micrometres per level-0 pixel, or None
"""
import uuid

import numpy as np


def axes(shape):
    """The OME axes of an array of ``shape`` (H, W) or (H, W, K) as written."""
    return "YX" if len(shape) == 2 else "YXS"


def stored_probs(probs):
    """Probabilities as written, float32: (h, w) for (h, w) or (1, h, w) given (a binary model's
    foreground), (h, w, K) for (K, h, w) given (K classes): one sample per class, as a pyramid's tiles
    hold them."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:
        return probs
    return probs[0] if len(probs) == 1 else np.moveaxis(probs, 0, -1)


def ome_metadata(shape, photometric, pixel_size=None, name=""):
    """tifffile's OME metadata dict for an image of ``shape`` (H, W[, K]) written as ``name``: axes,
    physical pixel size, and a UUID derived from the name, shape and photometric."""
    identity = uuid.uuid5(uuid.NAMESPACE_URL, f"iterseg:{name}:{tuple(shape)}:{photometric}")
    metadata = {"axes": axes(shape), "UUID": f"urn:uuid:{identity}"}
    if pixel_size is not None:
        metadata.update(PhysicalSizeY=float(pixel_size[0]), PhysicalSizeYUnit="µm",
                        PhysicalSizeX=float(pixel_size[1]), PhysicalSizeXUnit="µm")
    return metadata


def resolution_tags(pixel_size, level=(1.0, 1.0)):
    """tifffile's resolution keywords (pixels per centimetre) of a level ``level`` (h / H, w / W)
    times the size of level 0 whose pixels measure ``pixel_size``; {} when that is None."""
    if pixel_size is None:
        return {}
    return {"resolution": (1e4 * level[1] / pixel_size[1], 1e4 * level[0] / pixel_size[0]),
            "resolutionunit": "CENTIMETER"}
