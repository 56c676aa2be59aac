"""Tiled (Big)TIFFs read: level-0 regions tile by tile, pyramid levels, the physical pixel size (the
pyramids iterseg writes are disk/pyramid.py's).

Glossary
    region   (y, x, h, w) in level-0 pixels; parts outside the image are mirrored (np.pad 'reflect')
    levels   the pyramid as stored in the file: level 0 is full resolution, each further level is
             smaller (usually by 2); shapes (h, w) or (h, w, C)
    tile     (th, tw) the file's tile size
Reading uses tifffile alone: the tile offsets of the level-0 page tell where each tile's bytes are,
so a region costs the tiles it overlaps, never the whole image.
"""
import threading
from pathlib import Path

import numpy as np
import tifffile

from ..errors import InputError
from .limits import TIFF_SUFFIXES, check_pixels, quiet_tifffile


def mirror_index(index, length):
    """Map integer positions (any range) into [0, length) by mirroring at the edges (no edge repeat)."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def mirrored_region(read_inside, shape, y, x, h, w):
    """Pixels (h, w[, C]) of the region (y, x, h, w) of an image of ``shape``, mirrored where it leaves
    the image (``mirror_index``); read_inside(y, x, h, w) reads a region inside the image."""
    height, width = shape[:2]
    rows = mirror_index(np.arange(y, y + h), height)
    cols = mirror_index(np.arange(x, x + w), width)
    y0, x0 = int(rows.min()), int(cols.min())
    inside = read_inside(y0, x0, int(rows.max()) - y0 + 1, int(cols.max()) - x0 + 1)
    if y >= 0 and x >= 0 and y + h <= height and x + w <= width:
        return inside
    return inside[(rows - y0)[:, None], (cols - x0)[None, :]]


def tiles_overlapped(tile, y, x, h, w):
    """How many tiles of size ``tile`` (th, tw) the region (y, x, h, w) inside an image overlaps
    (one when the image is not tiled: ``tile`` (0, 0))."""
    th, tw = tile
    if not th or not tw:
        return 1
    return ((y + h - 1) // th - y // th + 1) * ((x + w - 1) // tw - x // tw + 1)


def tiled_reason(path):
    """None if ``path`` is a TIFF that can be streamed, else why not (for the report's notes)."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return "it is not a TIFF"
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return streaming_reason(tif)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for damaged files
        return unparsable(exc)


def unparsable(exc):
    """Why a TIFF whose header tifffile cannot parse (``exc``) cannot be streamed."""
    return f"tifffile cannot parse it ({str(exc)[:120]})"


def streaming_reason(tif):
    """None if the open TIFF ``tif`` (tifffile.TiffFile) can be streamed tile by tile, else why not."""
    try:
        page = tif.series[0].levels[0].keyframe
        if not page.is_tiled:
            return "the TIFF is stored in strips, not tiles"
        if page.imagedepth != 1 or page.planarconfig != 1 and page.samplesperpixel > 1:
            return "the TIFF's tiles are volumetric or store colour planes separately"
        if len(tif.series[0].levels[0].shape) not in (2, 3):
            return f"the TIFF's first image has shape {tif.series[0].levels[0].shape}"
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for damaged files
        return unparsable(exc)
    return None


def first_pixels(tif):
    """Pixels of the first image of the open TIFF ``tif`` from its header (0 when it says none)."""
    try:
        return int(tif.pages[0].imagelength) * int(tif.pages[0].imagewidth)
    except Exception:  # noqa: BLE001 - damaged: the reader will say what is wrong
        return 0


class TiledImage:
    """An open tiled TIFF. ``read_region`` decodes only the level-0 tiles a region overlaps and
    counts them in ``tiles_read``; ``read_level`` reads a whole pyramid level. Thread-safe.
    tif: the file already open (a tifffile.TiffFile of ``path``, closed with this), else it is opened here."""

    def __init__(self, path, max_pixels=None, tif=None):
        self.path = Path(path)
        if tif is None and self.path.suffix.lower() not in TIFF_SUFFIXES:
            raise InputError(f"{path} cannot be streamed: it is not a TIFF.")
        try:
            with quiet_tifffile():
                self._tif = tif or tifffile.TiffFile(path)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for damaged files
            raise InputError(f"{path} cannot be streamed: {unparsable(exc)}.") from None
        try:
            reason = streaming_reason(self._tif)
            if reason:
                raise InputError(f"{path} cannot be streamed: {reason}.")
            series = self._tif.series[0]
            self._levels = series.levels
            self._page = series.levels[0].keyframe
            self.shape = tuple(series.levels[0].shape)
            self.dtype = np.dtype(self._page.dtype)
            self.tile = (self._page.tilelength, self._page.tilewidth)
            check_pixels(path, self.shape[0], self.shape[1], max_pixels, streamed=True)
            if min(self.tile) < 1 or len(self._page.dataoffsets) < self._tiles_across() * -(
                    -self.shape[0] // self.tile[0]):
                raise InputError(f"tiled TIFF {path} lists fewer tiles than its size needs; export it again.")
        except BaseException:
            self._tif.close()
            raise
        self._size = self._tif.filehandle.size
        self.tiles_read = 0
        self._lock = threading.Lock()

    def _tiles_across(self):
        return -(-self.shape[1] // self.tile[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._tif.close()

    @property
    def level_shapes(self):
        return [tuple(level.shape) for level in self._levels]

    def read_level(self, index):
        """The whole pyramid level ``index`` as an array (h, w) or (h, w, C)."""
        with self._lock, quiet_tifffile():
            try:
                level = self._levels[index].asarray()
            except Exception as exc:  # noqa: BLE001 - tifffile and its codecs raise many types
                raise self._damaged(f"pyramid level {index}", exc) from None
        if tuple(level.shape[:2]) != tuple(self._levels[index].shape[:2]):
            raise self._damaged(f"pyramid level {index}", ValueError(f"shape {level.shape}"))
        return level

    def _damaged(self, where, exc):
        return InputError(f"tiled TIFF {self.path}: {where} cannot be read ({str(exc)[:100] or type(exc).__name__}); "
                          "the file is damaged or incomplete: copy or export it again.")

    def _tile(self, row, col):
        """Decoded tile (th, tw[, C]) at tile row/column ``row``, ``col`` of level 0; InputError if its
        bytes lie past the end of the file or do not decode to a tile."""
        page = self._page
        index = row * self._tiles_across() + col
        with self._lock:
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
            if count and (offset < 0 or offset + count > self._size):
                raise self._damaged(f"tile {index} (row {row}, column {col})",
                                    ValueError(f"its {count} bytes at offset {offset} lie past the end of the file"))
            handle = self._tif.filehandle
            handle.seek(offset)
            data = handle.read(count) if count else None
            self.tiles_read += 1
        try:
            with quiet_tifffile():
                tile = page.decode(data, index, jpegtables=page.jpegtables)[0]
        except Exception as exc:  # noqa: BLE001 - codecs raise many types for corrupt data
            raise self._damaged(f"tile {index} (row {row}, column {col})", exc) from None
        expected = (1,) + self.tile + ((self.shape[2],) if len(self.shape) == 3 else (1,))
        if tile is not None and tuple(tile.shape) != expected:
            raise self._damaged(f"tile {index} (row {row}, column {col})", ValueError(f"decoded shape {tile.shape}"))
        if tile is None:  # an empty tile: tifffile writes nothing for all-zero tiles when asked
            tile = np.zeros((1,) + self.tile + ((self.shape[2],) if len(self.shape) == 3 else (1,)), self.dtype)
        tile = tile[0]
        return tile if len(self.shape) == 3 else tile[..., 0]

    def _read_inside(self, y, x, h, w):
        """Region fully inside the image, assembled from the tiles it overlaps."""
        th, tw = self.tile
        out = np.empty((h, w) + self.shape[2:], self.dtype)
        for row in range(y // th, (y + h - 1) // th + 1):
            for col in range(x // tw, (x + w - 1) // tw + 1):
                tile = self._tile(row, col)
                y0, x0 = max(y, row * th), max(x, col * tw)
                y1, x1 = min(y + h, (row + 1) * th), min(x + w, (col + 1) * tw)
                out[y0 - y:y1 - y, x0 - x:x1 - x] = tile[y0 - row * th:y1 - row * th, x0 - col * tw:x1 - col * tw]
        return out

    def read_region(self, y, x, h, w):
        """Level-0 pixels of the region (y, x, h, w), mirrored where it leaves the image."""
        return mirrored_region(self._read_inside, self.shape, y, x, h, w)


MICROMETRES = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
RESOLUTION_UNITS = {2: 25400.0, 3: 1e4}  # TIFF ResolutionUnit: inch, centimetre (in micrometres)


def physical_size(path):
    """(y, x) micrometres per pixel of a TIFF's first image (``tiff_physical_size``); None when the
    file is not a readable TIFF."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return tiff_physical_size(tif)
    except Exception:  # noqa: BLE001 - a damaged header: the reader says what is wrong; no size here
        return None


def tiff_physical_size(tif):
    """(y, x) micrometres per pixel of the open TIFF ``tif``'s first image, from its OME-XML
    (PhysicalSizeY/X), else its resolution tags (per inch or centimetre; ImageJ's per-micron too);
    None when it says neither (72 dpi, most writers' placeholder, counts as saying nothing)."""
    try:
        return (_ome_size(tif.ome_metadata) if tif.is_ome else None) or _tag_size(tif)
    except Exception:  # noqa: BLE001 - a damaged header: the reader says what is wrong; no size here
        return None


def _ome_size(xml):
    """(y, x) micrometres per pixel from the first Pixels element of OME-XML, or None."""
    import xml.etree.ElementTree as ElementTree
    pixels = next((e for e in ElementTree.fromstring(xml).iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    sizes = []
    for axis in ("Y", "X"):
        value = pixels.attrib.get(f"PhysicalSize{axis}", pixels.attrib["PhysicalSizeX"])
        unit = MICROMETRES.get(pixels.attrib.get(f"PhysicalSize{axis}Unit", "µm"))
        if unit is None:
            return None
        sizes.append(float(value) * unit)
    return tuple(sizes) if min(sizes) > 0 else None


def _tag_size(tif):
    """(y, x) micrometres per pixel from the first page's resolution tags, or None."""
    tags = tif.pages[0].tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    unit = RESOLUTION_UNITS.get(int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2)
    if unit is None and tif.is_imagej and str((tif.imagej_metadata or {}).get("unit", "")) in MICROMETRES:
        unit = MICROMETRES[str(tif.imagej_metadata["unit"])]
    per_unit = [v[0] / v[1] if v[1] else 0 for v in (tags["YResolution"].value, tags["XResolution"].value)]
    if unit is None or min(per_unit) <= 0 or unit == 25400.0 and per_unit == [72.0, 72.0]:
        return None  # 72 dpi: the placeholder most image writers put there, not a measurement
    return unit / per_unit[0], unit / per_unit[1]
