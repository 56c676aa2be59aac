"""Reading images, with the checks that turn damaged, oversized or odd files into one-line InputErrors.

Every image file enters through ``read_image`` / ``read_image_noted``: the size is checked from the
header (Pillow opens PNG/JPEG/BMP/GIF/PPM/WebP lazily; tifffile reads TIFF headers) against a pixel
limit BEFORE anything is decoded, the bytes are read by Python (so any file name works, including
names that are not valid UTF-8) and decoded from memory, JPEG/EXIF orientation is applied so the
array matches what viewers show, and of a multi-page TIFF or an animated GIF/PNG/WebP the first
page is used with a note.

Glossary
    image    (H, W) or (H, W, C) array in RGB(A) order, dtype as stored (uint8, uint16, float32)
    notes    list of short strings saying what was done to the file's pixels (for Result.notes)
"""
import contextlib
import errno
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ..errors import InputError, describe
from .limits import (  # noqa: F401 -- read from here by callers
    MAX_PIXELS,
    MAX_STREAMED_PIXELS,
    SUPPORTED,
    TIFF_SUFFIXES,
    TILED_HOWTO,
    check_pixels,
    quiet_tifffile,
)
from .planes import first_plane, other_images_note

# formats whose header Pillow reads for the checks, all of which OpenCV decodes (JPEG includes MPO)
DECODED_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "PPM", "WEBP", "JPEG2000", "TIFF")
# EXIF orientation -> (np.rot90 turns counter-clockwise, then flip left-right), as viewers apply it
ORIENTATIONS = {2: (0, True), 3: (2, False), 4: (2, True), 5: (3, True), 6: (3, False), 7: (1, True), 8: (1, False)}


def check_image_file(path):
    """Raise InputError unless ``path`` is an existing, non-empty file (or an OME-Zarr folder), saying
    why not (missing, a broken link or a link loop, not accessible, a directory, empty)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError(unreachable(path, exc)) from None
    if stat.S_ISDIR(info.st_mode):
        if path.suffix.lower() == ".zarr":  # an OME-Zarr image is a folder
            return
        raise InputError(f"{path} is a directory; pass image files.")
    if info.st_size == 0:
        raise InputError(f"image file {path} is empty; re-export or skip it.")


def unreachable(path, exc):
    """What to tell the user when ``path`` cannot be reached (the OSError ``exc`` of a stat)."""
    if exc.errno == errno.ELOOP:
        return f"{path} is a symbolic link loop (it leads back to itself); fix or remove the link."
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot access {path} (permission denied); check the permissions of the file and of the folders "
                "above it.")
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; fix or remove the link."
    if exc.errno == errno.ENOENT:
        return f"image file {path} does not exist; check the path."
    return f"cannot access {path} ({exc.strerror or exc}); check the path."


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


def _read_tiff(path, max_pixels, notes):
    """The first image of the TIFF at ``path`` (``read_tiff``), the file opened here."""
    try:
        with quiet_tifffile(), tifffile.TiffFile(str(path)) as tif:
            return read_tiff(path, tif, max_pixels, notes)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises several types for damaged files
        raise damaged_tiff(path, exc) from None


def damaged_tiff(path, exc):
    """The InputError of a TIFF that tifffile cannot read (``exc``)."""
    return InputError(f"cannot read TIFF {path} ({describe(exc)}); check that the file is complete.")


def read_tiff(path, tif, max_pixels=None, notes=None):
    """The first image of the TIFF at ``path``, open as ``tif`` (a tifffile.TiffFile): series 0
    (level 0 of a pyramid) when it is one page holding (H, W), (H, W, C) or planar (C, H, W)
    samples, else its first plane (a stack of pages: disk/planes.py); appended to ``notes`` when the
    file holds more. InputError when it cannot be read."""
    notes = [] if notes is None else notes
    try:
        with quiet_tifffile():
            series = tif.series[0]
            page = series.keyframe
            shape = tuple(series.shape)
            # one page; or pages of (H, C) rows, as tifffile stores an (H, W, C) array with C > 4
            whole = len(series.pages) == 1 and page.imagedepth == 1 or len(shape) == 3 and shape[2] <= 8
            check_pixels(path, *(shape[:2] if whole and len(shape) == 3 and shape[2] <= 8 else
                                 (page.imagelength, page.imagewidth)), max_pixels)
            if whole and len(shape) in (2, 3):
                check_decoded_size(path, series.shape)
                image = series.asarray()
            else:
                image = _read_plane(path, series, notes)
            if len(tif.series) > 1:
                notes.append(other_images_note(tif.series))
    except InputError:
        raise
    except Exception as exc:  # tifffile raises several types for damaged files
        raise damaged_tiff(path, exc) from None
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
        image = np.moveaxis(image, 0, -1)  # planar (C, H, W) storage
    if image.ndim not in (2, 3) or image.size == 0:
        raise InputError(f"TIFF {path} holds an array of shape {image.shape}; iterseg reads one 2-D image "
                         "(H, W) or (H, W, C) per file.")
    return image


def _read_plane(path, series, notes):
    """The first plane of a stack of pages (disk/planes.py): (H, W), or (H, W, C) of its channel pages."""
    page = series.keyframe
    plane = first_plane(path, series.axes, tuple(series.shape), page.axes)
    check_decoded_size(path, (len(plane.keys),) + tuple(page.shape))
    pages = [series.pages[key].asarray() for key in plane.keys]
    notes.append(plane.note)
    return pages[0] if len(pages) == 1 else np.stack(pages, axis=-1)


def check_complete_jpeg(path, handle):
    """InputError if the JPEG file at ``path``, open as ``handle``, lacks its end-of-image marker: it
    was cut short, and decoders would silently fill the missing part with gray."""
    try:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
        tail = handle.read().rstrip(b"\0\r\n ")
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); check its permissions.") from None
    if not tail.endswith(b"\xff\xd9"):
        raise InputError(f"JPEG {path} is truncated (no end-of-image marker); copy or export it again.")


def check_complete_png(path, data):
    """InputError if the PNG bytes ``data`` are cut short or damaged: every chunk must lie inside the
    file with a right CRC, up to IEND. Checked before decoding, so that libpng prints nothing of its own."""
    view, offset = memoryview(data), 8  # after the signature
    while True:
        length, kind = struct.unpack(">I4s", view[offset:offset + 8]) if offset + 8 <= len(view) else (0, None)
        end = offset + 12 + length
        if kind is None or end > len(view):
            where = f"inside its {kind.decode('latin-1')} chunk" if kind else "before its IEND chunk"
            raise InputError(f"PNG {path} is truncated (it ends {where}); copy or export it again.")
        if zlib.crc32(view[offset + 4:end - 4]) != struct.unpack(">I", view[end - 4:end])[0]:
            raise InputError(f"PNG {path} is corrupt (its {kind.decode('latin-1')} chunk fails its CRC check); "
                             "copy or export it again.")
        if kind == b"IEND":
            return
        offset = end


def _header(handle):
    """(format, (width, height) or None, EXIF orientation 1-8, frames > 1) from the header of the
    file open as ``handle``, without decoding pixels; (None, None, 1, False) when Pillow does not know
    the format."""
    from PIL import Image
    handle.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: our limit decides
        try:
            with Image.open(handle, formats=DECODED_FORMATS) as image:
                orientation = 1
                with contextlib.suppress(Exception):  # a damaged EXIF block: no orientation
                    orientation = int(_exif(image).get(0x0112, 1))
                return image.format, image.size, orientation, bool(getattr(image, "is_animated", False))
        except Image.DecompressionBombError:  # above Pillow's own limit (179 Mpx): the header without it
            image = _open_unchecked(handle)
            return (image.format, image.size, 1, False) if image is not None else ("?", (2 ** 62, 1), 1, False)
        except Exception:  # noqa: BLE001 - not an image Pillow knows, or a damaged header
            return None, None, 1, False


def _exif(image):
    """The EXIF tags of a lazily opened image without decoding its pixels: Pillow's PNG ``getexif``
    decodes the whole image to look for an eXIf chunk after the pixel data (0.1 s at 2048^2); the
    PNG specification puts it before them, where ``open`` has already read it."""
    from PIL import Image
    if image.format != "PNG":
        return image.getexif()
    exif = Image.Exif()
    if image.info.get("exif"):
        exif.load(image.info["exif"])
    return exif


def _open_unchecked(handle):
    """The lazily opened image of ``handle`` (header only) without Pillow's decompression-bomb check,
    as Image.open finds the format, or None: our own limit decides, with the true size in its message."""
    from PIL import Image
    Image.init()
    handle.seek(0)
    prefix = handle.read(16)
    for name in (name for name in Image.ID if name in DECODED_FORMATS):
        factory, accept = Image.OPEN[name]
        try:
            if accept is None or accept(prefix):
                handle.seek(0)
                return factory(handle, "")
        except Exception:  # noqa: BLE001 - not this format; try the next, as Image.open does
            continue
    return None


def _decode(path, max_pixels, notes):
    """A non-TIFF file, opened once: header checked, decoded from its bytes by OpenCV (Pillow for GIF)."""
    with open(path, "rb") as handle:
        return _decode_open(path, handle, max_pixels, notes)


def _decode_open(path, handle, max_pixels, notes):
    """``_decode`` of the file open as ``handle``."""
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        check_complete_jpeg(path, handle)
    kind, size, orientation, animated = _header(handle)
    if size is None:
        raise InputError(f"cannot decode {path} as an image; iterseg reads {SUPPORTED} files.")
    check_pixels(path, size[1], size[0], max_pixels)
    check_decoded_size(path, (size[1], size[0], 4))  # at most 4 channels, before decoding
    if kind == "JPEG" and Path(path).suffix.lower() not in (".jpg", ".jpeg"):
        check_complete_jpeg(path, handle)
    if kind == "GIF":
        image = _decode_pillow(path, handle)
    else:
        handle.seek(0)
        raw = handle.read()
        if kind == "PNG":
            check_complete_png(path, raw)
        data = np.frombuffer(raw, np.uint8)
        try:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None:
            raise InputError(f"cannot decode {path} as an image; iterseg reads {SUPPORTED} files.")
        if image.ndim == 3 and image.shape[2] in (3, 4):  # OpenCV's BGR(A) to RGB(A), 5x a NumPy copy
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    if animated and kind != "MPO":  # a multi-picture JPEG's first image is the photo viewers show
        notes.append(f"animated {kind}: its first frame was read")
    if orientation in ORIENTATIONS:
        turns, flip = ORIENTATIONS[orientation]
        image = np.rot90(image, turns) if turns else image
        image = image[:, ::-1] if flip else image
        notes.append(f"EXIF orientation {orientation} applied (the image as viewers show it)")
    return np.ascontiguousarray(image)


def _decode_pillow(path, handle):
    """The first frame of the GIF at ``path``, open as ``handle``, as gray, RGB or RGBA."""
    from PIL import Image
    handle.seek(0)
    try:
        with warnings.catch_warnings(), Image.open(handle) as image:
            warnings.simplefilter("ignore")
            image.seek(0)
            mode = "RGBA" if "transparency" in image.info or image.mode in ("RGBA", "LA", "PA") else (
                "L" if image.mode in ("L", "1") else "RGB")
            return np.asarray(image.convert(mode))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
        raise InputError(f"cannot decode {path} ({describe(exc)}); check that the file is complete.") from None


def read_image_noted(path, max_pixels=None):
    """(image, notes): the image at ``path`` as an (H, W) or (H, W, C) RGB(A) array, dtype as stored,
    and what was done to read it (first page of a stack, EXIF orientation). max_pixels: refuse
    images whose header declares more pixels (default MAX_PIXELS), before decoding them."""
    path = Path(path)
    check_image_file(path)
    notes = []
    try:
        from .ngff import NgffImage, is_ngff
        from .slide import Slide, is_slide
        if is_ngff(path) or is_slide(path):
            with (NgffImage if is_ngff(path) else Slide)(path, max_pixels=float("inf")) as reader:
                return read_level0(path, reader, max_pixels)
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_tiff(path, max_pixels, notes), notes
        return _decode(path, max_pixels, notes), notes
    except (OSError, MemoryError) as exc:
        raise unreadable(path, exc) from None


def unreadable(path, exc):
    """The InputError of a file that cannot be read (``exc``: an OSError or MemoryError)."""
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return InputError(f"cannot read {path} ({message}); check the file and its permissions.")


def read_level0(path, reader, max_pixels=None):
    """(image (H, W[, C]), notes): level 0 of the whole-slide or OME-Zarr image at ``path``, open as
    ``reader`` (disk/slide.Slide, disk/ngff.NgffImage), read whole; max_pixels: the limit of an image
    decoded whole (``check_pixels``)."""
    from .slide import Slide
    check_pixels(path, *reader.shape[:2], max_pixels)
    kind = "whole-slide" if isinstance(reader, Slide) else "OME-Zarr"
    return reader.read_level_region(0, 0, 0, *reader.shape[:2]), [f"{kind} image: level 0 read whole"]


def read_image(path, max_pixels=None):
    """The image at ``path`` as an (H, W) or (H, W, C) RGB(A) array (see ``read_image_noted``)."""
    return read_image_noted(path, max_pixels)[0]
