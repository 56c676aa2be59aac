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
import re
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import tifffile

from .ome import ome_metadata, resolution_tags, stored_probs

OVERLAY_TINT = np.array([255, 40, 40], dtype=np.float32)    # foreground, RGB (default)
OUTPUT_TILE = (512, 512)  # the tile of the TIFFs written here and of the pyramids of streamed results (pyramid.py)
WINDOW_COLOUR = (255, 220, 0)                                 # refined windows, RGB
COLOURS = {"red": (255, 40, 40), "green": (40, 220, 40), "blue": (40, 90, 255), "yellow": (255, 230, 0),
           "cyan": (0, 230, 230), "magenta": (255, 0, 255), "orange": (255, 140, 0), "white": (255, 255, 255),
           "black": (0, 0, 0)}


def parse_colour(text):
    """'R,G,B' (0-255 each) or a name of COLOURS -> (r, g, b); ValueError saying what is accepted."""
    text = str(text).strip().lower()
    if text in COLOURS:
        return COLOURS[text]
    try:
        rgb = tuple(int(part) for part in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"expected R,G,B (0-255 each) or one of {', '.join(COLOURS)}, got {text!r}")
    return rgb


def default_tint(bundle):
    """The overlay colour of a binary model's foreground: its palette's foreground colour when that is
    not a gray, else green for a model trained on red-dominated images (fundus photographs, where a red
    tint is invisible: mean red above 1.5 times the other channels), else red."""
    palette = getattr(bundle, "palette", None)
    if palette is not None and len(palette) == 2 and len(set(palette[1])) > 1:
        return tuple(int(v) for v in palette[1])
    mean = np.asarray(getattr(bundle, "mean", ()), np.float64)
    if len(mean) == 3 and mean[0] > 1.5 * mean[1:].max():
        return COLOURS["green"]
    return tuple(int(v) for v in OVERLAY_TINT)


PARTIAL = re.compile(r"^\..+\.[0-9a-f]{8}\.partial(\.[A-Za-z0-9]+)?$")  # atomic_output's temporary names


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


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside ``path``; replace ``path`` by it only on success. (An old
    folder at ``path`` is removed just before the rename, which cannot replace a non-empty folder: a
    crash between the two leaves no mask, never a partial one.)"""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_with_opencv(path, rgb_or_gray):
    array = np.ascontiguousarray(rgb_or_gray)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(Path(path).suffix, array)
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


def stored_mask(mask, classes):
    """uint8 ``mask`` (h, w) class ids as a TIFF stores them: 0/255 for a binary model (``classes`` == 2)."""
    return (mask * 255 if classes == 2 else mask).astype(np.uint8, copy=False)


def write_mask_tiff(path, mask, classes, pixel_size=None, geotags=()):
    """TIFF of ``mask`` (H, W) uint8 class ids (0/255 for a binary model, ``classes`` == 2), zlib,
    with the input's GeoTIFF tags (disk/metadata.py) and pixel size: a GeoTIFF GIS tools overlay on
    the input."""
    tile = OUTPUT_TILE if min(mask.shape) >= OUTPUT_TILE[0] else None
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, stored_mask(mask, classes), compression="zlib", photometric="minisblack", tile=tile,
                         extratags=list(geotags), metadata=None, **resolution_tags(pixel_size))


def write_probs(path, probs, pixel_size=None):
    """float32 OME-TIFF of ``probs`` (H, W) or (K, H, W), zlib-compressed, tiled (512 px), stored as
    disk/ome.stored_probs says ((H, W) YX, or (H, W, K) YXS: the axes of a streamed result's pyramid)
    with the metadata of disk/ome.ome_metadata, so a rerun writes the same bytes; pixel_size: (y, x)
    micrometres per pixel, written as PhysicalSizeY/X and resolution tags."""
    pixels = np.ascontiguousarray(stored_probs(probs))
    tile = OUTPUT_TILE if min(pixels.shape[:2]) >= OUTPUT_TILE[0] else None
    metadata = ome_metadata(pixels.shape, "minisblack", pixel_size, Path(path).name)
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, pixels, compression="zlib", photometric="minisblack", compressionargs={"level": 1},
                         planarconfig="contig" if pixels.ndim == 3 else None, tile=tile, ome=True,
                         metadata=metadata, **resolution_tags(pixel_size))


def display_rgb(image):
    """uint8 (H, W, 3) view of an image for drawing: 16-bit and float scaled, gray repeated, alpha dropped."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(np.nan_to_num(image), 0, 1).astype(np.float32) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] in (2, 4):
        image = image[:, :, :-1]
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)


def overlay(image, mask, windows, palette=None, tint=None):
    """uint8 RGB (H, W, 3): ``image`` with the mask's foreground tinted and outlined and the refined
    ``windows`` drawn as rectangles. With a ``palette`` (multi-class), each class but 0 (background)
    is tinted with its colour. tint: (r, g, b) of a binary mask's foreground (default OVERLAY_TINT)."""
    rgb = display_rgb(image).copy()
    foreground = mask > 0
    tint = np.asarray(OVERLAY_TINT if tint is None else tint, dtype=np.float32)
    if palette is None:
        rgb[foreground] = (0.6 * rgb[foreground] + 0.4 * tint).astype(np.uint8)
    else:
        colours = np.asarray(palette, dtype=np.float32)[mask[foreground]]
        rgb[foreground] = (0.5 * rgb[foreground] + 0.5 * colours).astype(np.uint8)
    thickness = max(1, round(max(mask.shape) / 600))
    contours, _ = cv2.findContours(foreground.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, tuple(int(c) for c in tint), thickness)
    for y, x, h, w in np.asarray(windows, dtype=np.int64):
        cv2.rectangle(rgb, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), WINDOW_COLOUR, thickness)
    return rgb


def write_overlay(path, image, mask, windows, palette=None, tint=None):
    """PNG of ``overlay(image, mask, windows, palette, tint)``."""
    _write_with_opencv(path, overlay(image, mask, windows, palette, tint))


def mask_features(mask, class_names, scale=(1.0, 1.0)):
    """GeoJSON Features (Polygons) of the regions of each class but 0 in ``mask`` (uint8 class ids):
    one polygon per outer contour (cv2.findContours, RETR_CCOMP) with its holes as inner rings, through
    the centres of the boundary pixels, in full-resolution pixel coordinates [x, y] (pixel (0, 0) spans
    0..1; ``scale`` (sy, sx) maps mask pixels to them, for a mask drawn at a smaller scale);
    property ``classification`` {"name": class name}, as QuPath imports."""
    features = []
    for value in np.unique(mask[mask > 0]):
        contours, hierarchy = cv2.findContours((mask == value).astype(np.uint8), cv2.RETR_CCOMP,
                                               cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        hierarchy = hierarchy[0]

        def ring(contour):
            points = (contour[:, 0, :].astype(np.float64) + 0.5) * (scale[1], scale[0])  # pixel centres
            points = np.vstack([points, points[:1]])  # a closed ring repeats its first point
            return [[round(float(x), 2), round(float(y), 2)] for x, y in points]

        for index, contour in enumerate(contours):
            if hierarchy[index][3] >= 0 or len(contour) < 3:
                continue  # holes join their parent below; fewer than 3 points enclose nothing
            rings = [ring(contour)]
            child = hierarchy[index][2]
            while child >= 0:
                if len(contours[child]) >= 3:
                    rings.append(ring(contours[child]))
                child = hierarchy[child][0]
            name = class_names[value] if value < len(class_names) else str(int(value))
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
                             "properties": {"objectType": "annotation", "classification": {"name": name}}})
    return features


def write_geojson(path, mask, class_names, scale=(1.0, 1.0)):
    """GeoJSON FeatureCollection of ``mask_features(mask, class_names, scale)``; returns its feature count."""
    features = mask_features(mask, class_names, scale)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n", encoding="utf-8")
    return len(features)


def write_json(path, report):
    """``report`` (JSON-ready dict) as indented JSON."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def overview(result):
    """(image uint8 (h1, w1, C), mask (h1, w1), windows scaled) at stage-1 scale, for the overlay of
    an image too large to draw whole; ``result.view`` is the stage-1 view in [0, 1]."""
    height, width = result.shape
    h1, w1 = result.view.shape[:2]
    rows = ((np.arange(h1) + 0.5) * height / h1).astype(np.int64)
    cols = ((np.arange(w1) + 0.5) * width / w1).astype(np.int64)
    windows = np.round(np.asarray(result.windows) * np.array([h1 / height, w1 / width] * 2)).astype(np.int64)
    image = np.empty(result.view.shape, np.uint8)
    for top in range(0, h1, 256):  # a band at a time: no float copy of the whole view
        image[top:top + 256] = np.clip(result.view[top:top + 256] * 255 + 0.5, 0, 255)
    mask = np.concatenate([result.mask_at(rows[top:top + 256], cols) for top in range(0, h1, 256)])
    return image, mask, windows
