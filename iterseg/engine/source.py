"""Sources: where pixels come from. An image in memory, or a tiled TIFF or whole-slide image read
region by region; the engine sees both through the same three calls (``shape``, ``view``, ``read_boxes``).

Pixels enter here and only here: one rule maps any dtype to [0, 1] (``unit_range``, decided once per
image, never per strip or window) and one rule fits the channels to the model (``fit_channels``).

Glossary
    image    (H, W) or (H, W, C) array as read from disk: uint8, uint16, other integers, bool, floats
    unit     float32 (h, w, C) in [0, 1] with C = the model's input channels: what networks are fed
    boxes    int64 (N, 4) of (y, x, h, w) in full-resolution pixels, equal-sized; parts outside the
             image are mirrored (as np.pad mode 'reflect')
    view     float32 (h1, w1, C) unit image at stage-1 scale (INTER_AREA)
"""
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import tifffile

from ..disk.images import check_image_file, damaged_tiff, read_image_noted, read_level0, read_tiff, unreadable
from ..disk.limits import TIFF_SUFFIXES, quiet_tifffile
from ..disk.metadata import Metadata, reader_metadata, tiff_metadata
from ..disk.ngff import NgffImage, is_ngff
from ..disk.resample import ResampledReader, resize, working_resolution
from ..disk.slide import Slide, is_slide
from ..disk.tiff import TiledImage, first_pixels, mirror_index, streaming_reason, unparsable
from ..errors import InputError, naming
from ..kernels import block_means, can_block_mean

# dtypes OpenCV pads (BORDER_REFLECT_101 is np.pad's 'reflect')
OPENCV_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64))
STRIP_ROWS = 512  # level-0 rows read at a time when a TIFF is scanned or shrunk without a pyramid
STREAM_PIXELS = 4096 * 4096  # stream 'auto' streams tiled TIFFs larger than this
STREAM_MODES = ("auto", "always", "never")  # besides True (must stream) and False (= 'never')
RESOLUTIONS = ("model", "native")  # resolution=: the model's pixel size where both are known, or the file's own


@runtime_checkable
class Source(Protocol):
    """Where the engine's pixels come from (ArraySource, TiffSource, networks.TensorSource), as MONAI's
    inferers take a Splitter: everything stage 1, stage 2 and the report ask of an image."""
    shape: tuple  # (H, W) full resolution
    stored_shape: tuple  # (H, W[, C]) as stored
    notes: list  # what was done to the pixels (for Result.notes)
    in_memory: bool  # False when read region by region (streamed): the reader's decision (open_source)
    tiles_read: int | None  # TIFF tiles decoded so far (None in memory)
    metadata: Metadata  # what the file says about its pixels (physical size, GeoTIFF tags; empty for arrays)

    def view(self, height: int, width: int, progress: Callable[[int], None] | None = None) -> tuple:
        """(float32 (height, width, C) the image at stage-1 scale in [0, 1], note or None)."""

    def read_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """float32 (N, h, w, C) in [0, 1] of equal-sized ``boxes`` (N, 4), mirrored past the edges."""

    def close(self) -> None:
        """Let go of the file, if any."""


@dataclass(frozen=True)
class UnitRange:
    """unit = (value - offset) * scale, clipped to [0, 1]; ``note`` says what was done, for the report."""
    offset: float
    scale: float
    note: str | None = None

    def apply(self, pixels):
        """float32 unit values of ``pixels``; float64 values are scaled in float64 first, so that values
        beyond float32's range (near 1e300) never overflow to infinity."""
        if pixels.dtype.kind == "f" and pixels.dtype.itemsize > 4:
            unit = ((pixels.astype(np.float64) - self.offset) * self.scale).astype(np.float32)
        else:
            unit = pixels.astype(np.float32)
            if self.offset:
                unit -= np.float32(self.offset)
            if self.scale != 1:
                unit *= np.float32(self.scale)
        return np.clip(unit, 0.0, 1.0, out=unit)


INTENSITIES = ("dtype", "minmax")  # intensity=: the rule by dtype (default), or each image's own min / max


def check_intensity(intensity):
    """``intensity``, or InputError unless it is one of INTENSITIES."""
    if intensity not in INTENSITIES:
        raise InputError(f"intensity must be one of {', '.join(INTENSITIES)}, got {intensity!r}.")
    return intensity


def needs_scan(dtype, intensity="dtype"):
    """True when an image's minimum and maximum are read before stage 1 (a streamed one strip by
    strip): for intensity 'minmax', and for a float image (NaN and infinity refused, values outside
    [0, 1] noted)."""
    return intensity == "minmax" or np.issubdtype(dtype, np.floating)


def unit_range(dtype, extent=None, intensity="dtype"):
    """The one rule from stored values to [0, 1], by dtype (scikit-image's img_as_float convention):
    uint8 / 255, uint16 / 65535, any other integer / its dtype's largest value (negatives clip to 0),
    bool as 0/1, floats as given (clipped to [0, 1], noted when ``extent`` shows values outside); the
    same value means the same in every image of a dtype. With intensity 'minmax', rescaled from the
    image's own ``extent`` (low, high) instead."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return UnitRange(0.0, 1.0, "boolean image read as 0/1")
    hint = "; intensity='minmax' (--intensity minmax) rescales it by its own range"
    if check_intensity(intensity) == "minmax":
        low, high = extent
        if not np.isfinite(high - low):
            raise InputError(f"{dtype} image with values in [{low:g}, {high:g}]: their range overflows float64; "
                             "divide the image by a power of ten before segmenting it.")
        return UnitRange(low, 1 / max(high - low, 1e-12),
                         f"{dtype} image with values in [{low:g}, {high:g}] rescaled to [0, 1] (intensity minmax)")
    if dtype == np.uint8:
        return UnitRange(0.0, 1 / 255)
    if np.issubdtype(dtype, np.integer):
        top = float(np.iinfo(dtype).max)
        return UnitRange(0.0, 1 / top, f"{dtype} image scaled by 1/{top:g} to [0, 1]" + (
            "" if dtype == np.uint16 else hint))
    if extent is not None and (extent[0] < 0 or extent[1] > 1):
        return UnitRange(0.0, 1.0, f"{dtype} image with values in [{extent[0]:g}, {extent[1]:g}] clipped to "
                                   f"[0, 1]{hint}")
    return UnitRange(0.0, 1.0)


def fit_channels(image, channels):
    """(image (h, w, channels), note or None): ``image`` (h, w[, c]) with its channels fitted to the model."""
    if image.ndim == 2:
        image = image[:, :, None]
    have = image.shape[2]
    if have == channels:
        return image, None
    if have in (2, 4) and have - 1 == channels:
        return image[:, :, :channels], "alpha channel dropped"
    if have in (1, 2) and channels == 3:
        return np.repeat(image[:, :, :1], 3, axis=2), "grayscale image repeated to 3 channels" + (
            " (alpha dropped)" if have == 2 else "")
    if have in (3, 4) and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (image[:, :, :3] @ weights)[:, :, None], "RGB image converted to gray (ITU-R BT.601 weights)" + (
            " (alpha dropped)" if have == 4 else "")
    raise InputError(f"image has {have} channels but the model takes {channels}; "
                     "convert the image or use a model trained for this channel count.")


def as_array(image):
    """An image given as a NumPy array, a torch tensor or anything array-like, as a NumPy array."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, on any device or dtype
        try:
            image = image.detach().cpu()
            image = (image.float() if image.is_floating_point() else image).numpy()
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"cannot read the tensor's values ({str(exc).splitlines()[0][:120]}); pass a "
                             "CPU tensor or a NumPy array.") from None
    try:
        return np.asarray(image)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot read the image as an array ({exc}); pass a NumPy array or a file path.") from None


def check_image_shape(shape):
    """InputError unless ``shape`` is (H, W) or (H, W, C) with C <= 4 and H, W >= 1."""
    if len(shape) not in (2, 3) or shape[0] < 1 or shape[1] < 1:
        raise InputError(f"image must be a non-empty (H, W) or (H, W, C) array, got shape {tuple(shape)}.")
    if len(shape) == 3 and not 1 <= shape[2] <= 4:
        raise InputError(f"image has {shape[2]} channels in its last axis; iterseg reads "
                         "(H, W, C) with C <= 4: transpose a (C, H, W) array first.")


def check_dtype(dtype):
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        raise InputError(f"unsupported image dtype {dtype}; use uint8, uint16 or float32.")


def gather_boxes(array, boxes):
    """Cut equal-sized ``boxes`` out of ``array`` (H, W, C): (N, h, w, C), mirrored past the edges
    (``mirror_index``). Boxes inside the image, or reaching past it by less than they overlap it, are
    sliced and padded by reflection (a whole stage-1 view: 5-10x faster than indexing); others are
    cut with one indexing operation."""
    height, width = array.shape[:2]
    box_h, box_w = int(boxes[0, 2]), int(boxes[0, 3])
    out = np.empty((len(boxes), box_h, box_w) + array.shape[2:], array.dtype)
    for i, (y, x) in enumerate(np.asarray(boxes)[:, :2].tolist()):
        pads = [_overhang(y, box_h, height), _overhang(x, box_w, width)]
        if None in pads:
            rows = mirror_index(y + np.arange(box_h), height)
            cols = mirror_index(x + np.arange(box_w), width)
            out[i] = array[rows[:, None], cols[None, :]]
            continue
        block = array[max(y, 0):y + box_h, max(x, 0):x + box_w]
        if not any(map(any, pads)):
            out[i] = block
        elif array.dtype in OPENCV_DTYPES and array.shape[2:] <= (512,):  # in place, 4x np.pad's speed
            cv2.copyMakeBorder(block, *pads[0], *pads[1], cv2.BORDER_REFLECT_101, dst=out[i])
        else:
            out[i] = np.pad(block, pads + [(0, 0)] * (array.ndim - 2), mode="reflect")
    return out


def _overhang(start, size, length):
    """(before, after): how far ``size`` pixels from ``start`` reach past [0, length), or None where
    a reflection of the part inside would not cover it (mirror_index folds it again)."""
    before, after = max(0, -start), max(0, start + size - length)
    inside = min(start + size, length) - max(start, 0)
    return (before, after) if inside > 0 and before < inside and after < inside else None


def shrink(unit, height, width):
    """``unit`` (h, w, C) resized to height x width with INTER_AREA (channel axis kept)."""
    if unit.shape[:2] == (height, width):
        return unit
    return cv2.resize(unit, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, unit.shape[2])


class ArraySource:
    """An image in memory, kept as given: pixels become unit floats where they are read (the windows'
    boxes, the stage-1 view), never as a full-resolution float copy of the image (an 8-Mpx RGB image
    would be 98 MB more, page-faulted afresh for each image)."""
    in_memory = True
    tiles_read = None
    metadata = Metadata()  # a file's, set by open_source

    def __init__(self, image, channels, intensity="dtype"):
        image = as_array(image)
        check_image_shape(image.shape)
        check_dtype(image.dtype)
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise InputError("image contains NaN or infinite values; replace them (e.g. np.nan_to_num) "
                             "before segmenting.")
        scan = needs_scan(image.dtype, check_intensity(intensity))
        extent = (float(image.min()), float(image.max())) if scan else None
        self.scaling = unit_range(image.dtype, extent, intensity)
        self.channels = channels
        _, channel_note = fit_channels(np.zeros((1, 1) + image.shape[2:], np.float32), channels)
        self.pixels = image
        self.shape = image.shape[:2]
        self.stored_shape = image.shape
        self.notes = [note for note in (self.scaling.note, channel_note) if note]

    def to_unit(self, pixels):
        """Stored pixels (h, w[, c]) -> float32 (h, w, C) in [0, 1], C = the model's channels."""
        unit = fit_channels(self.scaling.apply(pixels), self.channels)[0]
        return np.ascontiguousarray(unit, dtype=np.float32)

    @property
    def unit(self):
        """float32 (H, W, C) the whole image in [0, 1] (made on each access: for training's samples)."""
        return self.to_unit(self.pixels)

    def read_boxes(self, boxes):
        boxes = gather_boxes(self.pixels, boxes)
        n, height = boxes.shape[:2]
        unit = self.to_unit(boxes.reshape((n * height,) + boxes.shape[2:]))
        return unit.reshape(n, height, *unit.shape[1:])

    def view(self, height, width, progress=None):
        """(float32 (height, width, C) the image at stage-1 scale, note or None): INTER_AREA. Stored
        8- or 16-bit pixels shrunk by whole factors are averaged as stored (kernels/area.py) and then made
        unit floats: their unit range is linear and never clips, so this equals shrinking the unit image.
        Otherwise strip by strip when the rows shrink by a whole factor (each strip's rows then map onto
        whole view rows, so the result is the whole image's resize exactly), else from the whole image."""
        full_height, full_width = self.shape
        factors = full_height // height, full_width // width
        if (height * factors[0], width * factors[1]) == self.shape and can_block_mean(self.pixels.dtype, *factors):
            return self.to_unit(block_means(self.pixels, *factors)), None
        if full_height % height or full_height == height:
            return shrink(self.unit, height, width), None
        factor = factors[0]
        view = np.empty((height, width, self.channels), np.float32)
        step = max(1, STRIP_ROWS // factor)  # view rows per strip
        for top in range(0, height, step):
            rows = min(step, height - top)
            strip = self.to_unit(self.pixels[top * factor:(top + rows) * factor])
            view[top:top + rows] = shrink(strip, rows, width)
        return view, None

    def close(self):
        pass


def open_streamed(path, max_pixels=None):
    """The reader of a file streamed region by region: disk/slide.Slide for whole-slide formats (by
    suffix), disk/ngff.NgffImage for OME-Zarr folders, else disk/tiff.TiledImage; all have shape,
    dtype, level_shapes, read_region, tiles_read (and the first two read_level_region)."""
    if is_slide(path):
        return Slide(path, max_pixels)
    return NgffImage(path, max_pixels) if is_ngff(path) else TiledImage(path, max_pixels)


class TiffSource:
    """A tiled (Big)TIFF or a whole-slide image read region by region: memory grows with what is read,
    not with the image. reader: the file already open (``open_streamed``'s kind, closed with this)."""
    in_memory = False
    metadata = Metadata()  # the file's, set by open_source

    def __init__(self, path, channels, progress=None, max_pixels=None, reader=None, intensity="dtype"):
        self.path = Path(path)
        self.tiff = reader or open_streamed(path, max_pixels)
        try:
            check_dtype(self.tiff.dtype)
            self.shape = self.tiff.shape[:2]
            self.stored_shape = self.tiff.shape
            self.channels = channels
            extent = self._extent(progress) if needs_scan(self.tiff.dtype, check_intensity(intensity)) else None
            self.scaling = unit_range(self.tiff.dtype, extent, intensity)
            _, channel_note = fit_channels(np.zeros((1, 1) + self.tiff.shape[2:], np.float32), channels)
        except BaseException:
            self.tiff.close()
            raise
        self.notes = [note for note in (self.scaling.note, channel_note) if note]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.tiff.close()

    @property
    def tiles_read(self):
        return self.tiff.tiles_read

    def _strips(self, level=0):
        """(top row, pixels) of level ``level`` in strips of STRIP_ROWS rows (the reader's level regions)."""
        height, width = self.tiff.level_shapes[level][:2]
        for top in range(0, height, STRIP_ROWS):
            rows = min(STRIP_ROWS, height - top)
            yield top, (self.tiff.read_region(top, 0, rows, width) if level == 0 else
                        self.tiff.read_level_region(level, top, 0, rows, width))

    def _extent(self, progress):
        """(min, max) of the stored values, read strip by strip; InputError on NaN or infinity."""
        low, high = np.inf, -np.inf
        for top, strip in self._strips():
            if np.issubdtype(strip.dtype, np.floating) and not np.isfinite(strip).all():
                raise InputError(f"{self.tiff.path} contains NaN or infinite values near row {top}; replace "
                                 "them before segmenting.")
            low, high = min(low, float(strip.min())), max(high, float(strip.max()))
            if progress:
                progress(len(strip))
        return low, high

    def to_unit(self, pixels):
        """Stored pixels (h, w[, c]) -> float32 (h, w, C) in [0, 1], C = the model's channels."""
        return fit_channels(self.scaling.apply(pixels), self.channels)[0]

    def read_boxes(self, boxes):
        return np.stack([self.to_unit(self.tiff.read_region(*map(int, box))) for box in boxes]).astype(np.float32)

    def view(self, height, width, progress=None):
        """(float32 (height, width, C) the image at stage-1 scale, note): from the smallest pyramid
        level at least that large, else shrunk from level-0 strips (INTER_AREA, one strip in memory).
        A whole-slide or OME-Zarr image's level is read in strips too; a TIFF's level is read whole."""
        levels = [(shape[0], index) for index, shape in enumerate(self.tiff.level_shapes)
                  if index and shape[0] >= height and shape[1] >= width]
        if not levels:
            return self._view_from_strips(height, width, progress), None
        index = min(levels)[1]
        if hasattr(self.tiff, "read_level_region"):  # a slide, OME-Zarr or resampled view: in strips
            before = self.tiff.level_tiles_read.get(index, 0)
            view = self._view_from_strips(height, width, progress, index)
            tiles = self.tiff.level_tiles_read.get(index, 0) - before
            stored = self.tiff.stored_level(index) if hasattr(self.tiff, "stored_level") else index  # the file's
            return view, f"stage 1 read pyramid level {stored} ({tiles} tiles; {width} x {height} after INTER_AREA)"
        view = shrink(self.to_unit(self.tiff.read_level(index)), height, width)
        return view, f"stage 1 read pyramid level {index} ({width} x {height} after INTER_AREA)"

    def _view_from_strips(self, height, width, progress, level=0):
        """INTER_AREA across each strip's columns with OpenCV, then across rows with the same area
        weights, accumulated in float64 over the few view rows a strip touches (the first of them
        shared with the strip before): cv2.resize INTER_AREA of the whole level up to float rounding,
        in the memory of the float32 view."""
        full_height = self.tiff.level_shapes[level][0]
        view = np.empty((height, width, self.channels), np.float32)
        first, pending = 0, np.zeros((0, width, self.channels))  # view rows first.. still being summed
        for top, strip in self._strips(level):
            rows = np.arange(top, top + len(strip))
            narrow = shrink(self.to_unit(strip), len(rows), width)
            weights, dest = area_weights(rows, height, full_height)
            summed = np.tensordot(weights, narrow, axes=(1, 0))
            done = int(dest[0]) - first  # rows above this strip's first are complete
            view[first:first + done] = pending[:done]
            summed[:len(pending) - done] += pending[done:]
            first, pending = int(dest[0]), summed
            if progress:
                progress(round(len(rows) * self.shape[0] / full_height))
        view[first:first + len(pending)] = pending
        return view


def area_weights(rows, small, full):
    """(dest rows, len(rows)) INTER_AREA weights of level-0 ``rows`` (a contiguous run) onto the
    stage-1 rows they overlap, and those dest row indices."""
    scale = full / small
    first = int(rows[0] // scale)
    last = min(small - 1, int((rows[-1] + 1 - 1e-9) // scale))
    dest = np.arange(first, last + 1)
    low = np.maximum(dest[:, None] * scale, rows[None, :])
    high = np.minimum((dest[:, None] + 1) * scale, rows[None, :] + 1)
    return np.clip(high - low, 0, None) / scale, dest


def model_mpp(mpp, resolution="model"):
    """The µm per pixel an image file is seen at (``open_file``'s ``mpp``) by a model trained at ``mpp``
    (model/bundle.Bundle.mpp, or None): ``mpp`` for resolution 'model', None (the file's own pixels)
    for 'native'."""
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}.")
    return mpp if resolution == "model" else None


def open_source(image, channels, stream=False, progress=None, max_pixels=None, intensity="dtype", mpp=None):
    """A source for ``image``: a Source is returned as it is; a path is opened by ``open_file``; an
    array is wrapped in an ArraySource. stream: see ``stream_decision``. max_pixels: refuse files
    whose header declares more pixels (default disk/images.MAX_PIXELS read whole, MAX_STREAMED_PIXELS
    streamed). intensity: 'dtype' or 'minmax' (``unit_range``). mpp: µm per pixel the model was
    trained at (None: the file's own pixels), see ``open_file``."""
    if isinstance(image, Source):
        return image
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        return open_file(Path(os.fsdecode(image)), channels, stream, progress, max_pixels, intensity, mpp)
    return ArraySource(image, channels, intensity)


def open_file(path, channels, stream=False, progress=None, max_pixels=None, intensity="dtype", mpp=None):
    """The one reader of an image file: it is opened once (a TIFF's header parsed once), decided
    streamed or read whole (``stream_decision``), and returned as the Source that carries the decision
    (``in_memory``), the notes and the file's metadata (disk/metadata.py). A file whose metadata gives
    a pixel size finer than ``mpp`` (µm per pixel the model was trained at) is seen at the model's
    pixel size: its nearest pyramid level, resampled where none matches (disk/resample.py)."""
    check_image_file(path)
    if is_slide(path) or is_ngff(path):
        return _open_pyramid(path, channels, stream, progress, max_pixels, intensity, mpp)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _open_tiff(path, channels, stream, progress, max_pixels, intensity, mpp)
    stream_decision(path, stream, "it is not a TIFF")
    return _in_memory(path, *read_image_noted(path, max_pixels), channels, Metadata(), intensity)


def stream_decision(path, stream, reason=None, pixels=0, pyramid=False):
    """(streamed?, note for the report or None): the one rule. stream: True (must: InputError saying
    why not), 'always' (whenever it can, else read whole with a note), 'auto' (a whole-slide or
    OME-Zarr image, ``pyramid``, or a tiled TIFF above STREAM_PIXELS), False or 'never' (read whole).
    reason: why ``path`` cannot be streamed (None: it can); pixels: of its first image."""
    if stream not in (True, False) + STREAM_MODES:
        raise InputError(f"stream must be True, False or one of {', '.join(STREAM_MODES)}, got {stream!r}.")
    if stream in (False, "never"):
        return False, None
    if reason is None:
        return stream in (True, "always") or pyramid or pixels > STREAM_PIXELS, None
    if stream is True:
        raise InputError(f"{path} cannot be streamed: {reason}.")
    large = stream == "always" or pixels > STREAM_PIXELS
    return False, (f"read whole: {reason}" if large else None)


def _in_memory(path, pixels, notes, channels, metadata, intensity, mpp=None):
    """The ArraySource of ``pixels`` read whole from ``path``, with the reader's notes and metadata;
    resized to the model's pixel size ``mpp`` where the metadata says it is finer."""
    working, resampled, metadata = _at_model_size(metadata, [pixels.shape], mpp)
    if working:
        pixels = resize(pixels, *working.shape)
    with naming(path):
        source = ArraySource(pixels, channels, intensity)
    source.notes[:0] = notes + resampled
    source.metadata = metadata
    return source


def _at_model_size(metadata, level_shapes, mpp, levels_readable=True):
    """(disk/resample.Working or None, notes, the metadata at that resolution) of a file with
    ``metadata`` and pyramid ``level_shapes`` under a model trained at ``mpp`` µm per pixel. A GeoTIFF
    is never resampled: its georeferencing tags are copied onto a mask of the input's pixel grid."""
    pixel_size = None if metadata.geotags else metadata.pixel_size
    working, note = working_resolution(pixel_size, level_shapes, mpp, levels_readable)
    notes = [n for n in (note, working and working.note) if n]
    return working, notes, dataclasses.replace(metadata, pixel_size=working.pixel_size) if working else metadata


def _streamed(path, reader, metadata, channels, progress, max_pixels, intensity, mpp):
    """The TiffSource of an open streamed ``reader`` with its file's ``metadata``, seen at the model's
    pixel size ``mpp`` where the metadata says the file is finer (disk/resample.ResampledReader)."""
    working, resampled, metadata = _at_model_size(metadata, reader.level_shapes, mpp,
                                                  hasattr(reader, "read_level_region"))
    if working:
        reader = ResampledReader(reader, working)
    source = TiffSource(path, channels, progress, max_pixels, reader, intensity)
    source.notes[:0] = resampled
    source.metadata = metadata
    return source


def _open_pyramid(path, channels, stream, progress, max_pixels, intensity, mpp=None):
    """A whole-slide or OME-Zarr image, its reader opened once: streamed from it unless ``stream``
    says never, then its level 0 read whole; the metadata from the same reader."""
    streamed = stream_decision(path, stream, pyramid=True)[0]
    reader = open_streamed(path, max_pixels if streamed else float("inf"))
    if streamed:
        return _streamed(path, reader, reader_metadata(reader), channels, progress, max_pixels, intensity, mpp)
    with reader:
        pixels, notes = read_level0(path, reader, max_pixels)
        metadata = reader_metadata(reader)
    return _in_memory(path, pixels, notes, channels, metadata, intensity, mpp)


def _open_tiff(path, channels, stream, progress, max_pixels, intensity, mpp=None):
    """A TIFF, its header parsed once: streamed tile by tile (disk/tiff.TiledImage) or read whole
    (disk/images.read_tiff) from the same open file."""
    try:
        with quiet_tifffile():
            tif = tifffile.TiffFile(str(path))
    except OSError as exc:
        raise unreadable(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for damaged files
        stream_decision(path, stream, unparsable(exc))
        raise damaged_tiff(path, exc) from None
    try:
        metadata = tiff_metadata(path, tif)
        streamed, note = stream_decision(path, stream, streaming_reason(tif), first_pixels(tif))
        if not streamed:
            notes = []
            pixels = read_tiff(path, tif, max_pixels, notes)
    except BaseException:
        tif.close()
        raise
    if not streamed:
        tif.close()
        return _in_memory(path, pixels, notes + [note] if note else notes, channels, metadata, intensity, mpp)
    return _streamed(path, TiledImage(path, max_pixels, tif), metadata, channels, progress, max_pixels, intensity, mpp)
