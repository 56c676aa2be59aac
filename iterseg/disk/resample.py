"""An image read at the pixel size a model was trained at, as pathology tools do: a model trained at
0.5 µm per pixel run on a slide scanned at 0.25 µm reads the slide's pyramid level nearest 0.5 µm
(resampled with INTER_AREA where no level matches within TOLERANCE), not level 0 (``Bundle.mpp``).

Glossary
    pixel_size  (y, x) micrometres per level-0 pixel of the file, from its metadata
    mpp         micrometres per pixel the model was trained at
    working     the resolution the model runs at: its shape (H', W') and pixel size; the mask, the
                report and the OME outputs are at this resolution
    level       the stored pyramid level read for the working resolution (0 = full resolution)
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .tiff import mirrored_region

TOLERANCE = 1.1  # pixel sizes within 10 % count as equal: no resampling, no level change
RESIZABLE = (np.uint8, np.uint16, np.int16, np.float32, np.float64)  # what cv2.resize takes as it is


@dataclass(frozen=True)
class Working:
    """Where the model runs: ``level`` of the file read, resampled to ``shape`` (H', W') when it is not
    that level's own shape; ``pixel_size`` (y, x) µm there; ``note`` for the report."""
    level: int
    shape: tuple
    pixel_size: tuple
    note: str


def working_resolution(pixel_size, level_shapes, mpp, levels_readable=True):
    """(Working or None, note or None): where a model trained at ``mpp`` µm per pixel runs on an image
    of level-0 ``pixel_size`` (y, x) whose pyramid levels have ``level_shapes`` (level 0 first). None
    when the image is already at the model's pixel size (within TOLERANCE), or coarser than it (then
    with a note: stage 2 sees structures smaller than it learnt); levels_readable: False when only
    level 0 can be read region by region (a plain tiled TIFF), which is then resampled."""
    if not mpp or not pixel_size:
        return None, None
    factors = (mpp / pixel_size[0], mpp / pixel_size[1])
    if max(factors) <= TOLERANCE:
        if min(factors) < 1 / TOLERANCE:
            return None, (f"the image's pixels ({_microns(pixel_size)} µm) are larger than the model's "
                          f"({mpp:g} µm): run as stored; structures look smaller to the model than in training")
        return None, None
    height, width = level_shapes[0][:2]
    level = max((index for index, shape in enumerate(level_shapes[:None if levels_readable else 1])
                 if height / shape[0] <= factors[0] * TOLERANCE and width / shape[1] <= factors[1] * TOLERANCE),
                default=0)
    level_h, level_w = level_shapes[level][:2]
    matches = all(abs(math.log(full / part / factor)) <= math.log(TOLERANCE)
                  for full, part, factor in ((height, level_h, factors[0]), (width, level_w, factors[1])))
    shape = (level_h, level_w) if matches else (max(1, round(height / factors[0])), max(1, round(width / factors[1])))
    working = (pixel_size[0] * height / shape[0], pixel_size[1] * width / shape[1])
    how = (f"pyramid level {level}" if matches else
           f"pyramid level {level} resampled" if level else "level 0 resampled (INTER_AREA)")
    note = (f"model trained at {mpp:g} µm per pixel: ran on {how}, {shape[1]} x {shape[0]} px at "
            f"{_microns(working)} µm, instead of level 0 ({width} x {height} px at {_microns(pixel_size)} µm); "
            "the mask is at that resolution (--resolution native runs at level 0)")
    return Working(level, shape, working, note), None


def _microns(pixel_size):
    y, x = pixel_size
    return f"{x:.4g}" if abs(x - y) <= 1e-6 * max(x, y) else f"{x:.4g} x {y:.4g}"


def resize(pixels, height, width):
    """``pixels`` (h, w[, C]) of any dtype resized to height x width with INTER_AREA, same dtype."""
    if pixels.shape[:2] == (height, width):
        return pixels
    dtype = pixels.dtype
    work = pixels if dtype in RESIZABLE else pixels.astype(np.float64)
    out = cv2.resize(work, (width, height), interpolation=cv2.INTER_AREA).reshape((height, width) + pixels.shape[2:])
    if out.dtype == dtype:
        return out
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


class ResampledReader:
    """A streamed reader (disk/tiff.TiledImage, disk/slide.Slide, disk/ngff.NgffImage) seen at the
    ``working`` resolution: its level-0 regions are ``working.level``'s, resampled to ``working.shape``;
    the reader's coarser levels stay readable for stage 1 where it has ``read_level_region``. Counts
    the tiles of the level it reads as ``tiles_read``."""

    def __init__(self, reader, working):
        self.reader, self.working = reader, working
        self.path, self.dtype = reader.path, reader.dtype
        self.shape = tuple(working.shape) + tuple(reader.shape[2:])
        level_h, level_w = reader.level_shapes[working.level][:2]
        self.ratio = (level_h / working.shape[0], level_w / working.shape[1])  # level pixels per working pixel
        coarser = [index for index, shape in enumerate(reader.level_shapes) if index > working.level
                   and shape[0] < working.shape[0] and shape[1] < working.shape[1]]
        self._levels = [working.level] + (coarser if hasattr(reader, "read_level_region") else [])

    @property
    def level_shapes(self):
        return [self.shape] + [self.reader.level_shapes[index] for index in self._levels[1:]]

    @property
    def tiles_read(self):
        level = self.working.level
        return self.reader.tiles_read if level == 0 else self.reader.level_tiles_read.get(level, 0)

    @property
    def level_tiles_read(self):
        counts = getattr(self.reader, "level_tiles_read", {})
        return {mine: counts.get(theirs, 0) for mine, theirs in enumerate(self._levels) if mine}

    def stored_level(self, level):
        """The file's pyramid level that this view's ``level`` reads."""
        return self._levels[level]

    def read_level_region(self, level, y, x, h, w):
        """Pixels (h, w[, C]) of the region (y, x, h, w) of ``level`` of this view (inside it)."""
        if level:
            return self.reader.read_level_region(self._levels[level], y, x, h, w)
        (ry, rx), (level_h, level_w) = self.ratio, self.reader.level_shapes[self.working.level][:2]
        top, left = math.floor(y * ry), math.floor(x * rx)
        bottom, right = min(level_h, math.ceil((y + h) * ry)), min(level_w, math.ceil((x + w) * rx))
        if self.working.level:
            stored = self.reader.read_level_region(self.working.level, top, left, bottom - top, right - left)
        else:
            stored = self.reader.read_region(top, left, bottom - top, right - left)
        return resize(stored, h, w)

    def read_region(self, y, x, h, w):
        """Working-resolution pixels of the region (y, x, h, w), mirrored where it leaves the image."""
        return mirrored_region(lambda *box: self.read_level_region(0, *box), self.shape, y, x, h, w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.reader.close()
