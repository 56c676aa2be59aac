"""Whole-slide images read through a library made for them: tiffslide (tifffile underneath) for the
TIFF-based formats (Aperio .svs, Hamamatsu .ndpi, Leica .scn, Ventana .bif, pyramidal TIFF), OpenSlide
for 3DHistech .mrxs and DICOM (``pip install 'iterseg[wsi]'``). Both speak OpenSlide's interface:
``read_region(location, level, size)``, ``level_downsamples``, ``properties`` (MPP, objective power).

Glossary
    region   (y, x, h, w) in level-0 pixels; parts outside the slide are mirrored (np.pad 'reflect')
    level    the slide's own pyramid as stored: level 0 is full resolution, level k is smaller by
             ``level_downsamples[k]`` (often 4 for Aperio, 2 elsewhere); shapes (h, w, C) or (h, w)
    mpp      (y, x) micrometres per level-0 pixel, from the slide's metadata
A ``Slide`` has the interface of disk/tiff.TiledImage (shape, dtype, tile, level_shapes, read_region,
tiles_read), so engine/source.TiffSource streams both alike.
"""
import contextlib
import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .limits import check_pixels, quiet_tifffile
from .tiff import mirrored_region, tiles_overlapped

SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".mrxs", ".dcm")
OPENSLIDE_SUFFIXES = (".mrxs", ".dcm")  # formats tifffile cannot read
WSI_EXTRA = "pip install 'iterseg[wsi]' (OpenSlide)"


def is_slide(path):
    """True for the file suffixes of whole-slide formats (SLIDE_SUFFIXES)."""
    return Path(path).suffix.lower() in SLIDE_SUFFIXES


@dataclass(frozen=True)
class SlideInfo:
    """What a slide's metadata says: mpp (y, x) micrometres per level-0 pixel or None, the scanner's
    objective power or None, the vendor tiffslide / OpenSlide name ('aperio', 'hamamatsu', ...)."""
    mpp: tuple | None
    objective_power: float | None
    vendor: str | None


def _number(value):
    """A positive finite float from a metadata value, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def slide_info(properties, prefix):
    """SlideInfo from OpenSlide-style ``properties`` ('tiffslide' or 'openslide' ``prefix``)."""
    mpp_x, mpp_y = (_number(properties.get(f"{prefix}.mpp-{axis}")) for axis in ("x", "y"))
    mpp = (mpp_y or mpp_x, mpp_x or mpp_y) if mpp_x or mpp_y else None
    vendor = properties.get(f"{prefix}.vendor")
    return SlideInfo(mpp, _number(properties.get(f"{prefix}.objective-power")), str(vendor) if vendor else None)


def _open_backend(path):
    """(the OpenSlide-like object, the file handle to close or None, properties prefix)."""
    if Path(path).suffix.lower() in OPENSLIDE_SUFFIXES:
        try:
            import openslide
        except ImportError:
            raise InputError(f"{path}: {Path(path).suffix} slides need OpenSlide: {WSI_EXTRA}.") from None
        return openslide.OpenSlide(str(path)), None, "openslide"
    import tiffslide
    handle = open(path, "rb")  # a handle, not a name: tiffslide would take 'a::b' or 'x://y' for URLs
    try:
        with quiet_tifffile(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "hamamatsu-format metadata parsing only partially implemented"
            slide = tiffslide.TiffSlide(handle)
            slide.properties  # noqa: B018 - parsed here, so a damaged header fails on opening
        return slide, handle, "tiffslide"
    except BaseException:
        handle.close()
        raise


class Slide:
    """An open whole-slide image. ``read_region`` reads level-0 regions, ``read_level_region`` a
    region of any level; the tiles they overlap are counted in ``tiles_read`` (level 0) and
    ``level_tiles_read`` ({level: tiles}). Thread-safe."""

    def __init__(self, path, max_pixels=None):
        self.path = Path(path)
        try:
            with quiet_tifffile():
                self._slide, self._handle, prefix = _open_backend(self.path)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - tiffslide, tifffile and OpenSlide raise many types
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise InputError(f"cannot read slide {self.path} ({reason}); check that the file is complete and is a "
                             "whole-slide image.") from None
        try:
            self.backend = prefix  # which library reads it: 'tiffslide' or 'openslide'
            self._openslide = prefix == "openslide"
            properties = self._slide.properties
            self.info = slide_info(properties, prefix)
            width, height = self._slide.dimensions
            channels = 3 if self._openslide else self._channels(properties)
            self.shape = (int(height), int(width)) + ((channels,) if channels > 1 else ())
            self.dtype = np.dtype(np.uint8) if self._openslide else self._dtype()
            self.tile = (int(properties.get(f"{prefix}.level[0].tile-height") or 0),
                         int(properties.get(f"{prefix}.level[0].tile-width") or 0))
            check_pixels(self.path, height, width, max_pixels, streamed=True)
        except BaseException:
            self.close()
            raise
        self.tiles_read, self.level_tiles_read = 0, {}  # level 0; {level: tiles} of the others
        self._lock = threading.Lock()

    @property
    def tifffile(self):
        """The tifffile.TiffFile tiffslide reads (its tags: a GeoTIFF's), None through OpenSlide."""
        return None if self._openslide else self._slide.ts_tifffile

    def _channels(self, properties):
        axes = properties.get("tiffslide.series-axes", "YXS")
        series = self._slide.ts_tifffile.series[properties.get("tiffslide.series-index", 0)]
        return int(series.shape[axes.index("S")]) if "S" in axes else (
            int(series.shape[0]) if axes.startswith("C") else 1)

    def _dtype(self):
        return np.dtype(self._slide.ts_tifffile.series[self._slide.properties.get("tiffslide.series-index", 0)].dtype)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with contextlib.suppress(Exception):
            self._slide.close()
        if self._handle is not None:
            self._handle.close()

    @property
    def level_shapes(self):
        return [(int(h), int(w)) + self.shape[2:] for w, h in self._slide.level_dimensions]

    @property
    def level_downsamples(self):
        return tuple(float(d) for d in self._slide.level_downsamples)

    def _damaged(self, where, exc):
        return InputError(f"slide {self.path}: {where} cannot be read ({str(exc)[:100] or type(exc).__name__}); "
                          "the file is damaged or incomplete: copy or export it again.")

    def read_level_region(self, level, y, x, h, w):
        """Pixels (h, w[, C]) of the region (y, x, h, w) of ``level``, in that level's coordinates
        (inside the level)."""
        scale = self.level_downsamples[level]
        location = (math.ceil(x * scale), math.ceil(y * scale))  # back to (x, y) exactly after / scale
        try:
            with quiet_tifffile():
                if self._openslide:
                    region = self._rgb(self._slide.read_region(location, level, (w, h)))
                else:
                    region = np.asarray(self._slide.read_region(location, level, (w, h), as_array=True))
        except Exception as exc:  # noqa: BLE001 - codecs raise many types for corrupt data
            raise self._damaged(f"level {level} region at row {y}, column {x}", exc) from None
        if region.shape[:2] != (h, w):
            raise self._damaged(f"level {level} region at row {y}, column {x}", ValueError(f"shape {region.shape}"))
        self._count(level, tiles_overlapped(self.tile if level == 0 else self._level_tile(level), y, x, h, w))
        return region[..., 0] if len(self.shape) == 2 else region

    def _count(self, level, tiles):
        """Add ``tiles`` read from ``level`` to tiles_read (level 0) or level_tiles_read."""
        with self._lock:
            if level == 0:
                self.tiles_read += tiles
            else:
                self.level_tiles_read[level] = self.level_tiles_read.get(level, 0) + tiles

    def _level_tile(self, level):
        """(th, tw) of ``level``'s tiles ((0, 0) when the properties do not say)."""
        properties, prefix = self._slide.properties, self.backend
        return tuple(int(properties.get(f"{prefix}.level[{level}].tile-{side}") or 0) for side in ("height", "width"))

    def _rgb(self, image):
        """OpenSlide's premultiplied RGBA region as RGB on white (where the scanner saw nothing)."""
        rgba = np.asarray(image)
        alpha = rgba[..., 3:].astype(np.float32) / 255
        return np.clip(rgba[..., :3] + 255 * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)

    def read_region(self, y, x, h, w):
        """Level-0 pixels of the region (y, x, h, w), mirrored where it leaves the slide."""
        return mirrored_region(lambda *box: self.read_level_region(0, *box), self.shape, y, x, h, w)
