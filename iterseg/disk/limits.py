"""What may be read, shared by every reader of disk/: the file suffixes and formats, the pixel
limits checked from a header before anything is decoded, and tifffile kept quiet about damaged
files (the InputError says what is wrong). Its own module, so that the readers (images.py, tiff.py,
slide.py, ngff.py) import it without importing each other."""
import contextlib
import logging

from ..errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
SUPPORTED = "PNG, JPEG, BMP, GIF, PPM/PGM, TIFF, whole-slide (SVS, NDPI, SCN, MRXS, DICOM) or OME-Zarr"
MAX_PIXELS = 100_000_000  # default limit of an image decoded whole (10000 x 10000)
MAX_STREAMED_PIXELS = 10_000_000_000  # default limit of a tiled TIFF read tile by tile (100000 x 100000)
TILED_HOWTO = ("convert it to a tiled TIFF, which iterseg streams region by region (e.g. `vips tiffsave IN OUT.tif "
               "--tile --pyramid --bigtiff`, or tifffile.imwrite(OUT, image, tile=(256, 256))), crop it")


def check_pixels(path, height, width, max_pixels=None, streamed=False):
    """InputError if an image of ``height`` x ``width`` (from its header) exceeds the pixel limit:
    ``max_pixels``, else MAX_PIXELS for an image decoded whole / MAX_STREAMED_PIXELS for a streamed one."""
    limit = max_pixels or (MAX_STREAMED_PIXELS if streamed else MAX_PIXELS)
    pixels = int(height) * int(width)
    if pixels > limit:
        how = "crop it or raise --max-pixels (max_pixels=)" if streamed else TILED_HOWTO + ", or raise --max-pixels"
        raise InputError(f"{path} declares {width} x {height} pixels ({pixels / 1e6:.0f} Mpx), above the limit of "
                         f"{limit / 1e6:g} Mpx for an image {'streamed' if streamed else 'decoded whole'}; {how}.")


@contextlib.contextmanager
def quiet_tifffile():
    """Silence tifffile's log messages about damaged files: the InputError raised says what is wrong."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
