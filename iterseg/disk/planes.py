"""Which image of a TIFF that holds many iterseg reads: the first plane of a stack of pages, with its
channel pages as the image's channels, and a note that names what was read; more channels than an
image has are refused with a line that says how to pick some.

Glossary (tifffile's axis letters)
    stack    the axes of a series above its pages, e.g. "ZC" of a ZCYX OME-TIFF whose pages each hold
             one YX plane, "Q" or "I" of a plain multi-page TIFF, "T" of a time series
    plane    index 0 of every stack axis but C (channels): one image, its C pages as channels
    keys     indices of the plane's pages within the series, in channel order
"""
import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MAX_CHANNELS = 4
PAGE_AXES = ("Q", "I")  # tifffile's letters for pages without a known meaning
OTHER_HOWTO = "save it as its own file first, e.g. tifffile.imwrite(OUT, tifffile.imread(IN, {}))"


@dataclass(frozen=True)
class Plane:
    keys: list
    note: str


def first_plane(path, axes, shape, page_axes):
    """The Plane iterseg reads of a series of ``axes`` and ``shape`` (squeezed, as tifffile gives
    them) whose pages have ``page_axes``; InputError if it has more than MAX_CHANNELS channels."""
    if not axes.endswith(page_axes) or len(axes) == len(page_axes):
        return Plane([0], f"TIFF of shape {tuple(shape)} (axes {axes}): its first page was read")
    stack, sizes = axes[:len(axes) - len(page_axes)], tuple(shape[:len(axes) - len(page_axes)])
    picks = [range(size) if axis == "C" else [0] for axis, size in zip(stack, sizes, strict=True)]
    keys = [int(np.ravel_multi_index(index, sizes)) for index in itertools.product(*picks)]
    channels = len(keys) * (shape[axes.index("S")] if "S" in axes else 1)
    if channels > MAX_CHANNELS:
        raise InputError(f"TIFF {path} holds {channels} channels in each plane (axes {axes}, shape {tuple(shape)}); "
                         f"iterseg reads at most {MAX_CHANNELS}: save those to segment as their own file first, "
                         "e.g. tifffile.imwrite(OUT, tifffile.imread(IN)[..., :3, :, :]) for the first three of C.")
    return Plane(keys, _note(axes, tuple(shape), stack, len(keys)))


def _note(axes, shape, stack, channels):
    """What was read of a stack of pages: the first page, or the plane at 0 of each axis but C."""
    sizes = shape[:len(stack)]
    if set(stack) <= set(PAGE_AXES):
        return (f"multi-page TIFF: the first of its {int(np.prod(sizes))} pages was read; to segment another, "
                + OTHER_HOWTO.format("key=K"))
    fixed = ", ".join(f"{axis}=0 of {size}" for axis, size in zip(stack, sizes, strict=True) if axis != "C")
    what = f"TIFF of axes {axes} ({' x '.join(map(str, shape))}): "
    if not fixed:
        return what + f"its {channels} channels (C) were read as the image's channels"
    return (what + f"plane {fixed} was read" + (f", its {channels} channels (C) as the image's channels"
                                                  if channels > 1 else "")
            + "; to segment another plane, save it as its own file first, e.g. tifffile.imwrite(OUT, "
              "tifffile.imread(IN)[K])")


def other_images_note(series):
    """The note of a TIFF that holds more than one image (series): the first was read."""
    page = series[0].keyframe
    return (f"the TIFF holds {len(series)} images; the first ({page.imagewidth} x {page.imagelength} pixels) was "
            "read; to segment another, " + OTHER_HOWTO.format("series=K"))
