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
