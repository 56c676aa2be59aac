"""Shared test material: tiny bundles (random weights, or set by hand), generated images and datasets
(no data, no training), and where the real datasets are when present."""
import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iterseg.model.bundle import Bundle
from iterseg.model.store import untrained_bundle
from iterseg.model.unet import UNet, UNetConfig

SMALL = UNetConfig(in_channels=3, out_channels=1, depth=2, width=4)

# The real datasets (PH2, DRIVE, HRF): $ITERSEG_DATA, else ../shared/data beside the repository.
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ITERSEG_DATA") or REPO.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not (SHARED_DATA / "PH2").is_dir(),
                                reason=f"real datasets not found at {SHARED_DATA} (set ITERSEG_DATA)")


def small_bundle(**overrides):
    """A binary bundle with a 2-level, 4-channel U-Net (size multiple 4) and random weights."""
    config = UNetConfig(**{**SMALL.__dict__, **overrides})
    bundle = untrained_bundle(config, seed=1)
    for model in (bundle.s1, bundle.s2):  # non-trivial batch-norm statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return bundle


def conditioned_bundle(with_reference=True):
    """small_bundle's S1 and a random S2 taking 3 image channels + the S1 probability (seed 5)."""
    plain = small_bundle()
    with torch.random.fork_rng():
        torch.manual_seed(5)
        s2 = UNet(SMALL.__class__(**{**SMALL.__dict__, "in_channels": 4}))
    return Bundle(s1=plain.s1, s2=s2, mean=plain.mean, std=plain.std, name="cond",
                  reference=plain.s2 if with_reference else None), plain


def bright_network(config=None):
    """A U-Net whose weights are set by hand to mark bright pixels: logit = 8 * relu(mean of the
    normalised channels) - 4 at every pixel (every other weight zero). On ``disc_pair`` images (discs at
    150-220 on a 20-70 background, normalised by mean 0.5 / std 0.25) it finds the discs almost exactly."""
    config = dataclasses.replace(config or SMALL, norm="none")
    model = UNet(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.inc[0].weight[0, :, 1, 1] = 1 / config.in_channels  # centre taps: the channel mean
        for conv in (model.inc[2], model.fuse[-1][0], model.fuse[-1][2]):
            conv.weight[0, 0, 1, 1] = 1  # carried along channel 0 (the skip path of the top level)
        model.head.weight[0, 0] = 8
        model.head.bias[0] = -4
    return model


def bright_bundle():
    """A binary bundle whose S1 and S2 are ``bright_network``s: masks that mean something, no training."""
    return Bundle(s1=bright_network(), s2=bright_network(), mean=(0.5,) * 3, std=(0.25,) * 3, name="bright")


CLASS_COLOURS = ((0, 0, 0), (220, 40, 40), (40, 200, 60), (60, 80, 230))  # background, then 3 classes
CLASS_NAMES = ("background", "disc", "square", "bar")


def multiclass_bundle():
    """small_bundle with 4 softmax outputs, named CLASS_NAMES, coloured CLASS_COLOURS (random weights)."""
    plain = small_bundle(out_channels=4)
    return Bundle(s1=plain.s1, s2=plain.s2, mean=plain.mean, std=plain.std, class_names=CLASS_NAMES,
                  palette=CLASS_COLOURS, name="shapes")


def blob_image(height, width, seed=0, channels=3):
    """uint8 (H, W, C) image with a few bright discs on a noisy dark background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, channels), dtype=np.uint8)
    for _ in range(4):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(2, max(3, min(height, width) // 3)))
        cv2.circle(image, centre, radius, (200,) * channels, -1)
    return image


def disc_pair(height, width, seed):
    """(uint8 RGB image, uint8 0/255 mask): bright discs (the foreground) on a noisy background."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(mask, centre, int(rng.integers(4, max(5, min(height, width) // 4))), 255, -1)
    image = rng.integers(20, 70, (height, width, 3)).astype(np.uint8)
    image[mask > 0] = rng.integers(150, 220, (int((mask > 0).sum()), 3)).astype(np.uint8)
    return image, mask


SPEC_TEMPLATE = """name: syn
images: SYN/images/*.png
match: 'SYN/images/(?P<id>img\\d+)'
mask: SYN/masks/{id}.png
foreground: 255
fov: null
augment: {hflip: true, vflip: true, rotate90: true}
split:
  seed: 0
  test_fraction: 0.25
"""


def write_dataset(root, count=8, height=96, width=128):
    """A synthetic binary dataset under root/SYN and its spec file root/syn.yaml; returns the spec path."""
    (root / "SYN" / "images").mkdir(parents=True)
    (root / "SYN" / "masks").mkdir(parents=True)
    for i in range(count):
        image, mask = disc_pair(height, width, seed=i)
        cv2.imwrite(str(root / "SYN" / "images" / f"img{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "SYN" / "masks" / f"img{i}.png"), mask)
    spec = root / "syn.yaml"
    spec.write_text(SPEC_TEMPLATE, encoding="utf-8")
    return spec


def write_image_folder(folder, count):
    """``folder`` with ``count`` small blob PNGs (img0.png ...) and one truncated PNG (broken.png)."""
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i}.png"), blob_image(64, 80, seed=i))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def write_tiled(path, image, tile=(64, 64), pyramid=False):
    """Write ``image`` (H, W[, C]) as a tiled BigTIFF; with ``pyramid``, levels made by INTER_AREA halving."""
    from iterseg.disk.pyramid import pyramid_shapes, write_pyramid
    levels = [image]
    if pyramid:
        for h, w in pyramid_shapes(image.shape[0], image.shape[1], tile)[1:]:
            levels.append(cv2.resize(levels[-1], (w, h), interpolation=cv2.INTER_AREA))
    write_pyramid(path, image.shape, image.dtype, lambda level, y, x, h, w: levels[level][y:y + h, x:x + w],
                  tile=tile, levels=len(levels))
    return path


def class_pair(height, width, seed):
    """(uint8 RGB image, uint8 (H, W) class ids 0-3): discs, squares and bars, each class drawn in
    its own colour (plus noise) on a noisy background; a 2-pixel unlabelled frame (id 255)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((height, width), np.uint8)
    for _ in range(2):
        y, x = int(rng.integers(8, height - 8)), int(rng.integers(8, width - 8))
        size = int(rng.integers(5, max(6, min(height, width) // 5)))
        cv2.circle(ids, (x, y), size, 1, -1)
        y2, x2 = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
        ids[y2:y2 + size, x2:x2 + size] = 2
        y3 = int(rng.integers(0, height - 4))
        ids[y3:y3 + 4, int(rng.integers(0, width // 2)):] = 3
    image = np.asarray(CLASS_COLOURS, np.float32)[ids] * 0.8 + rng.integers(20, 60, (height, width, 3))
    ids[:2], ids[-2:], ids[:, :2], ids[:, -2:] = 255, 255, 255, 255
    return np.clip(image, 0, 255).astype(np.uint8), ids


MULTICLASS_SPEC = """name: shapes
images: SHAPES/images/*.png
match: 'SHAPES/images/(?P<id>img\\d+)'
mask: SHAPES/masks/{id}.png
classes:
%s
fov: null
augment: {hflip: true, vflip: true, rotate90: true}
split:
  seed: 0
  test_fraction: 0.25
"""


def write_multiclass_dataset(root, count=8, height=64, width=96, colours=True):
    """A synthetic 4-class dataset under root/SHAPES and its spec root/shapes.yaml (masks colour-coded
    with CLASS_COLOURS, or gray values 0-3 when ``colours`` is False; unlabelled frame white / 255)."""
    (root / "SHAPES" / "images").mkdir(parents=True)
    (root / "SHAPES" / "masks").mkdir(parents=True)
    for i in range(count):
        image, ids = class_pair(height, width, seed=i)
        if colours:
            mask = np.full((height, width, 3), 255, np.uint8)
            labelled = ids != 255
            mask[labelled] = np.asarray(CLASS_COLOURS, np.uint8)[ids[labelled]]
            mask = mask[:, :, ::-1]  # OpenCV writes BGR
        else:
            mask = ids
        cv2.imwrite(str(root / "SHAPES" / "images" / f"img{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "SHAPES" / "masks" / f"img{i}.png"), mask)
    entries = "\n".join(f"  - {{name: {name}, colour: [{c[0]}, {c[1]}, {c[2]}]}}" if colours else
                        f"  - {{name: {name}, value: {index}}}"
                        for index, (name, c) in enumerate(zip(CLASS_NAMES, CLASS_COLOURS, strict=True)))
    spec = root / "shapes.yaml"
    spec.write_text(MULTICLASS_SPEC % entries, encoding="utf-8")
    return spec


def write_slide(path, image, tile=(64, 64), mpp=0.25, compression="zlib", levels=3):
    """Write ``image`` (H, W, 3) uint8 as an Aperio-style SVS (benchmarks/synthetic_slide.write_svs):
    levels downsampled by 4 with INTER_AREA, the Aperio description with ``mpp`` and AppMag 20.
    Returns the level arrays."""
    from benchmarks.synthetic_slide import write_svs
    arrays = {1: image}
    for k in range(1, levels):
        h, w = -(-image.shape[0] // 4 ** k), -(-image.shape[1] // 4 ** k)
        arrays[4 ** k] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    write_svs(path, *image.shape[:2], lambda step, y, x, h, w: arrays[step][y:y + h, x:x + w], tile=tile, mpp=mpp,
              levels=levels, compression=compression)
    return list(arrays.values())


def write_ngff(path, image, chunk=64, levels=3, mpp=0.5):
    """Write ``image`` (H, W, 3) uint8 as an OME-Zarr multiscale image (ome-zarr's writer, axes c, y,
    x, levels halving, ``mpp`` micrometres per pixel)."""
    import zarr
    from ome_zarr.writer import write_image
    group = zarr.open_group(str(path), mode="w")
    write_image(np.moveaxis(image, -1, 0), group, axes=["c", "y", "x"],
                scale_factors=[2 ** k for k in range(1, levels)],
                storage_options={"chunks": (image.shape[2], chunk, chunk)}, scale={"c": 1.0, "y": mpp, "x": mpp},
                axes_units={"y": "micrometer", "x": "micrometer"})
    return path
