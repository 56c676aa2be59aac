"""What an input file says about where its pixels are: physical pixel size, a slide's objective
power and vendor, a GeoTIFF's georeferencing. Read once per image, by the reader
(engine/source.open_source: ``tiff_metadata`` from the TIFF it has open, ``read_metadata`` else), which
the source carries; the report and the writers (disk/outputs.py, disk/pyramid.py) carry it over to
the outputs.

Glossary
    pixel_size  (y, x) micrometres per level-0 pixel, or None
    geotags     tifffile ``extratags`` tuples (code, dtype, count, value, writeonce) of the GeoTIFF
                tags in GEOTIFF_TAGS, as the input stores them: written unchanged onto a mask of the
                same pixel grid, so GIS tools overlay it on the input
"""
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

from .limits import TIFF_SUFFIXES, quiet_tifffile

# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


@dataclass(frozen=True)
class Metadata:
    """Everything carried from an input file to its outputs (see the module glossary)."""
    pixel_size: tuple | None = None
    objective_power: float | None = None
    vendor: str | None = None
    geotags: tuple = field(default=())

    def report(self):
        """The report's fields (only those the file has): mpp [y, x], objective_power, vendor, georeferenced."""
        fields = {"mpp": [round(v, 6) for v in self.pixel_size] if self.pixel_size else None,
                  "objective_power": self.objective_power, "vendor": self.vendor,
                  "georeferenced": bool(self.geotags) or None}
        return {key: value for key, value in fields.items() if value is not None}


def read_metadata(path):
    """The Metadata of the image file at ``path`` (empty for formats that say nothing; never raises:
    a damaged file is refused by its reader, not here). A file the caller has open: ``tiff_metadata``,
    ``reader_metadata``."""
    from .ngff import NgffImage, is_ngff
    from .slide import Slide, is_slide
    try:
        if is_ngff(path) or is_slide(path):
            with (NgffImage if is_ngff(path) else Slide)(path, max_pixels=float("inf")) as reader:
                return reader_metadata(reader)
        if Path(path).suffix.lower() in TIFF_SUFFIXES:
            with quiet_tifffile(), tifffile.TiffFile(path) as tif:
                return tiff_metadata(path, tif)
    except Exception:  # noqa: BLE001 - the reader says what is wrong with the file
        pass
    return Metadata()


def tiff_metadata(path, tif):
    """The Metadata of the TIFF at ``path``, open as ``tif`` (a tifffile.TiffFile): its physical pixel
    size and GeoTIFF tags; a slide scanner's TIFF (``scanner_tiff``) is asked through the slide reader,
    which knows its vendor's metadata. Never raises."""
    from .slide import Slide
    from .tiff import tiff_physical_size
    try:
        if scanner_tiff(tif):
            with Slide(path, max_pixels=float("inf")) as slide:
                return reader_metadata(slide)
        return Metadata(tiff_physical_size(tif), geotags=geotiff_tags(tif))
    except Exception:  # noqa: BLE001 - the reader says what is wrong with the file
        return Metadata()


def reader_metadata(reader):
    """The Metadata of an open whole-slide (disk/slide.Slide: MPP, objective power, vendor and, read
    through tifffile, GeoTIFF tags) or OME-Zarr (disk/ngff.NgffImage: pixel size) reader."""
    from .ngff import NgffImage
    if isinstance(reader, NgffImage):
        return Metadata(reader.pixel_size)
    info, tif = reader.info, reader.tifffile
    return Metadata(info.mpp, info.objective_power, info.vendor, geotiff_tags(tif) if tif is not None else ())


def scanner_tiff(tif):
    """True for a TIFF (an open tifffile.TiffFile) that a slide scanner wrote (Aperio, Hamamatsu,
    Leica, Ventana or Philips layout, renamed .tif): its MPP is in the vendor's metadata, not in the
    resolution tags."""
    return any((tif.is_svs, tif.is_ndpi, tif.is_scn, tif.is_bif, tif.is_philips))


def geotiff_tags(tif):
    """The GEOTIFF_TAGS of the open TIFF ``tif``'s first page as tifffile extratags (() if it has none)."""
    try:
        tags = tif.pages.first.tags
        return tuple((code, int(tags[code].dtype), _count(tags[code]), tags[code].value, True)
                     for code in GEOTIFF_TAGS if code in tags)
    except Exception:  # noqa: BLE001 - a damaged first page: no georeferencing
        return ()


def _count(tag):
    """The count tifffile's writer wants: values for numbers, 0 (its own count) for text."""
    return 0 if isinstance(tag.value, (str, bytes)) else tag.count
