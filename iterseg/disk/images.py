"""Reading images, with the checks that turn damaged or oversized files into one-line InputErrors.

Glossary
    image    (H, W) or (H, W, C) array in RGB(A) order, dtype as stored (uint8, uint16, float32)
"""
import contextlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ..errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
SUPPORTED = "PNG, JPEG, BMP, GIF, PPM/PGM or TIFF"


def check_image_file(path):
    """Raise InputError unless ``path`` is an existing, non-empty file."""
    if not path.exists():
        raise InputError(f"image file {path} does not exist; check the path.")
    if path.is_dir():
        raise InputError(f"{path} is a directory; pass image files.")
    if path.stat().st_size == 0:
        raise InputError(f"image file {path} is empty; re-export or skip it.")


def memory_budget():
    """Bytes an image may take once converted to float32: a quarter of the machine's memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2 ** 30


def check_decoded_size(path, shape):
    """InputError if an array of ``shape`` would not fit in memory as float32, before allocating it."""
    needed = int(np.prod(shape, dtype=np.float64)) * 4
    if needed > memory_budget():
        raise InputError(f"{path} declares an image of {' x '.join(map(str, shape))} values "
                         f"({needed / 2 ** 30:.1f} GB as float32), more than this machine can hold; store it as a "
                         f"tiled TIFF, which iterseg streams region by region, or crop it.")


def _read_tiff(path):
    """The first image of a TIFF: series 0 (level 0 of a pyramid) when it is (H, W), (H, W, C) or
    planar (C, H, W) RGB(A), else the first page of a stack."""
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = tuple(series.shape)
            if len(shape) == 2 or len(shape) == 3 and (shape[2] <= 8 or shape[0] in (3, 4)):
                check_decoded_size(path, shape)
                image = series.asarray()
            else:
                check_decoded_size(path, tif.pages[0].shape)
                image = tif.pages[0].asarray()
    except InputError:
        raise
    except Exception as exc:  # tifffile raises several types for damaged files
        raise InputError(f"cannot read TIFF {path} ({str(exc)[:120]}); check that the file is complete.") from None
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
        image = np.moveaxis(image, 0, -1)  # planar (C, H, W) storage
    if image.ndim not in (2, 3):
        raise InputError(f"TIFF {path} holds an array of shape {image.shape}; iterseg reads one 2-D image "
                         "(H, W) or (H, W, C) per file.")
    return image


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


def check_complete_jpeg(path):
    """InputError if a JPEG file lacks its end-of-image marker: it was cut short, and decoders would
    silently fill the missing part with gray."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4096))
            tail = handle.read().rstrip(b"\0\r\n ")
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); check its permissions.") from None
    if not tail.endswith(b"\xff\xd9"):
        raise InputError(f"JPEG {path} is truncated (no end-of-image marker); copy or export it again.")


def _read_opencv(path):
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        check_complete_jpeg(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot decode {path} as an image; iterseg reads {SUPPORTED} files.")
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, [2, 1, 0, 3]])
    return image


def read_image(path):
    """The image at ``path`` as an (H, W) or (H, W, C) RGB(A) array, dtype as stored."""
    path = Path(path)
    check_image_file(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    return _read_opencv(path)
