"""Writing results; every write goes to a temporary file renamed into place (``atomic_output``).

Glossary
    image    (H, W) or (H, W, C) array in RGB(A) order, dtype as stored (uint8, uint16, float32)
    mask     uint8 (H, W) class ids (0/1 for binary; written as 0/255)
    probs    float32 (H, W) or (K, H, W) probabilities
    windows  int64 (N, 4) of (y, x, h, w)
"""
import contextlib
import json
import os
import uuid
from pathlib import Path

import cv2
import numpy as np
import tifffile

OVERLAY_TINT = np.array([255, 40, 40], dtype=np.float32)    # foreground, RGB
WINDOW_COLOUR = (255, 220, 0)                                 # refined windows, RGB


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path`` (same suffix); rename it to ``path`` only on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_with_opencv(path, rgb_or_gray):
    array = rgb_or_gray[:, :, ::-1] if rgb_or_gray.ndim == 3 else rgb_or_gray
    ok, encoded = cv2.imencode(Path(path).suffix, np.ascontiguousarray(array))
    if not ok:
        raise OSError(f"OpenCV could not encode {path}.")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def write_mask(path, mask, palette=None):
    """PNG of ``mask`` (H, W) uint8 class ids: 0/255 gray for a binary mask (``palette`` None), else
    an indexed (palette) PNG whose pixel values are the class ids and whose colour table is
    ``palette`` (an RGB triple per class), as PASCAL VOC and street-scene tools write them."""
    if palette is None:
        _write_with_opencv(path, (mask * 255).astype(np.uint8))
        return
    from PIL import Image  # Pillow writes indexed PNGs, which OpenCV cannot
    indexed = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    indexed.putpalette([int(v) for colour in palette for v in colour])
    with atomic_output(path) as tmp:
        indexed.save(tmp, format="PNG")


def write_probs(path, probs):
    """float32 TIFF of ``probs`` (H, W) or (K, H, W), zlib-compressed."""
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(probs, dtype=np.float32), compression="zlib", photometric="minisblack",
                         compressionargs={"level": 1}, metadata={"axes": "YX" if np.ndim(probs) == 2 else "CYX"})


def display_rgb(image):
    """uint8 (H, W, 3) view of an image for drawing: 16-bit and float scaled, gray repeated, alpha dropped."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(np.nan_to_num(image.astype(np.float32)), 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] in (2, 4):
        image = image[:, :, :-1]
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)


def overlay(image, mask, windows, palette=None):
    """uint8 RGB (H, W, 3): ``image`` with the mask's foreground tinted and outlined and the refined
    ``windows`` drawn as rectangles. With a ``palette`` (multi-class), each class but 0 (background)
    is tinted with its colour."""
    rgb = display_rgb(image).copy()
    foreground = mask > 0
    if palette is None:
        rgb[foreground] = (0.6 * rgb[foreground] + 0.4 * OVERLAY_TINT).astype(np.uint8)
    else:
        colours = np.asarray(palette, dtype=np.float32)[mask[foreground]]
        rgb[foreground] = (0.5 * rgb[foreground] + 0.5 * colours).astype(np.uint8)
    thickness = max(1, round(max(mask.shape) / 600))
    contours, _ = cv2.findContours(foreground.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, tuple(int(c) for c in OVERLAY_TINT), thickness)
    for y, x, h, w in np.asarray(windows, dtype=np.int64):
        cv2.rectangle(rgb, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), WINDOW_COLOUR, thickness)
    return rgb


def write_overlay(path, image, mask, windows, palette=None):
    """PNG of ``overlay(image, mask, windows, palette)``."""
    _write_with_opencv(path, overlay(image, mask, windows, palette))


def write_json(path, report):
    """``report`` (JSON-ready dict) as indented JSON."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# --- large results, written tile by tile from result.mask_at / result.probs_at --------------------

OUTPUT_TILE = (512, 512)


def level_positions(start, count, level):
    """Level-0 pixel at the centre of level-``level`` pixels start .. start+count (nearest sampling)."""
    step = 2 ** level
    return (start + np.arange(count)) * step + step // 2


def write_mask_pyramid(path, result, classes, progress=None):
    """The mask of ``result`` (anything with ``shape`` and ``mask_at(rows, cols)``) as a tiled
    pyramidal BigTIFF (uint8; 0/255 for binary, class ids otherwise), written one tile at a time;
    returns the foreground fraction at level 0. classes: the model's class count."""
    from .tiff import write_pyramid
    foreground = [0]

    def region(level, y, x, h, w):
        mask = result.mask_at(level_positions(y, h, level), level_positions(x, w, level))
        if level == 0:
            foreground[0] += int(np.count_nonzero(mask))
        return mask * 255 if classes == 2 else mask

    write_pyramid(path, result.shape, np.uint8, region, tile=OUTPUT_TILE, progress=progress)
    return foreground[0] / (result.shape[0] * result.shape[1])


def write_probs_pyramid(path, result, classes, progress=None):
    """Probabilities (float32; the foreground's for binary, (H, W, K) for K classes) as a tiled
    pyramidal BigTIFF written one tile at a time from ``result.probs_at``."""
    from .tiff import write_pyramid

    def region(level, y, x, h, w):
        probs = result.probs_at(level_positions(y, h, level), level_positions(x, w, level))
        return probs[0] if classes == 2 else np.moveaxis(probs, 0, -1)

    shape = result.shape if classes == 2 else tuple(result.shape) + (classes,)
    write_pyramid(path, shape, np.float32, region, tile=OUTPUT_TILE, photometric="minisblack", progress=progress)


def overview(result):
    """(image uint8 (h1, w1, C), mask (h1, w1), windows scaled) at stage-1 scale, for the overlay of
    an image too large to draw whole; ``result.view`` is the stage-1 view in [0, 1]."""
    height, width = result.shape
    h1, w1 = result.view.shape[:2]
    rows = ((np.arange(h1) + 0.5) * height / h1).astype(np.int64)
    cols = ((np.arange(w1) + 0.5) * width / w1).astype(np.int64)
    windows = np.round(np.asarray(result.windows) * np.array([h1 / height, w1 / width] * 2)).astype(np.int64)
    image = np.clip(result.view * 255 + 0.5, 0, 255).astype(np.uint8)
    return image, result.mask_at(rows, cols), windows
