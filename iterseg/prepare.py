"""Turn an image as read from disk into what the networks expect.

Glossary
    image    (H, W) or (H, W, C) array: uint8, uint16, any integer, float32/float64 (see _float_to_unit_range)
    float    float32 (H, W, C) in [0, 1] with C = the bundle's input channels
"""
import numpy as np

from .errors import InputError

INTEGER_RANGE_NOTE = "{dtype} image scaled by 1/{scale:g} to [0, 1]"


def _as_unit_range(image, notes):
    if image.dtype in (np.uint8, np.uint16):  # in place: no second full-size float copy
        unit = image.astype(np.float32)
        if image.dtype == np.uint16:
            notes.append(INTEGER_RANGE_NOTE.format(dtype="uint16", scale=65535))
        return np.divide(unit, 255.0 if image.dtype == np.uint8 else 65535.0, out=unit)
    if image.dtype == np.bool_:
        notes.append("boolean image read as 0/1")
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        top = float(max(int(image.max()), 1))
        notes.append(INTEGER_RANGE_NOTE.format(dtype=image.dtype, scale=top))
        return image.astype(np.float32) / top
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise InputError("image contains NaN or infinite values; replace them (e.g. np.nan_to_num) "
                             "before segmenting.")
        return _float_to_unit_range(image, notes)
    raise InputError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float32.")


def _float_to_unit_range(image, notes):
    """Floats are taken as [0, 1]; values beyond it are 0-255 data (scaled by 1/255) or, failing
    that, rescaled from their own minimum and maximum. The report says which."""
    low, high = float(image.min()), float(image.max())
    if 0.0 <= low and high <= 1.0:
        return image
    if 0.0 <= low and high <= 255.0:
        notes.append(f"float image with values up to {high:g} read as 0-255 data and scaled by 1/255")
        return np.divide(image, 255.0, out=image)
    notes.append(f"float image with values in [{low:g}, {high:g}] rescaled to [0, 1]")
    image -= low
    return np.divide(image, max(high - low, 1e-12), out=image)


def _fit_channels(image, channels, notes):
    if image.ndim == 2:
        image = image[:, :, None]
    have = image.shape[2]
    if have == channels:
        return image
    if have in (2, 4) and have - 1 == channels:
        notes.append("alpha channel dropped")
        return image[:, :, :channels]
    if have in (1, 2) and channels == 3:
        notes.append("grayscale image repeated to 3 channels" + (" (alpha dropped)" if have == 2 else ""))
        return np.repeat(image[:, :, :1], 3, axis=2)
    if have in (3, 4) and channels == 1:
        notes.append("RGB image converted to gray (ITU-R BT.601 weights)" + (" (alpha dropped)" if have == 4 else ""))
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (image[:, :, :3] @ weights)[:, :, None]
    raise InputError(f"image has {have} channels but the model takes {channels}; "
                     "convert the image or use a model trained for this channel count.")


def as_float_image(image, channels):
    """``image`` (H, W[, C]) -> (float32 (H, W, channels) in [0, 1], notes on what was converted)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image must be a non-empty (H, W) or (H, W, C) array, got shape {image.shape}.")
    if image.ndim == 3 and not 1 <= image.shape[2] <= 4:
        raise InputError(f"image has {image.shape[2]} channels in its last axis; iterseg reads "
                         "(H, W, C) with C <= 4: transpose a (C, H, W) array first.")
    notes = []
    unit = _as_unit_range(image, notes)
    return np.ascontiguousarray(_fit_channels(unit, channels, notes), dtype=np.float32), notes
