"""int8 calibration on data: an int8 bundle from a float one and a few training images
(the quantization itself is model/quantize.py).

Glossary
    images        float32 (H, W, C) in [0, 1], a few training images
    stage1_probs  float32 (K', H, W) stage-1 probabilities of each image, at full resolution
    x             float32 (N, C, h, w) normalised batch, h and w multiples of the U-Net's size multiple
"""
import cv2
import numpy as np
import torch

from ..data import read_sample
from ..model.bundle import Bundle
from ..model.cpu import has_vnni
from ..model.quantize import as_stored, calibrate, fold_batch_norm
from ..prepare import as_float_image
from ..stage1 import resize, stage1, stage1_size

CALIBRATION_CROP = 256     # S2 (and the reference network) calibrate on crops of this side


def calibration_batches(images, bundle, stage1_probs, network, seed=0, crops_per_image=4):
    """Normalised x tensors for calibrating one of the bundle's networks on ``images`` (float32
    (H, W, C) in [0, 1]): S1 sees each image downscaled as predict does; S2 and the reference see
    ``crops_per_image`` seeded CALIBRATION_CROP crops at full resolution (S2 with the stage-1
    probabilities as extra channels when it is conditioned)."""
    rng = np.random.default_rng(seed)
    multiple = network.config.size_multiple
    batches = []
    for image, probs in zip(images, stage1_probs):
        if network is bundle.s1:
            h1, w1 = stage1_size(*image.shape[:2], bundle.s1_scale)
            small = resize(image, h1, w1, cv2.INTER_AREA)
            h, w = h1 // multiple * multiple or multiple, w1 // multiple * multiple or multiple
            batches.append(_normalise(small[:h, :w][None], bundle.mean, bundle.std))
            continue
        inputs, mean, std = image, bundle.mean, bundle.std
        if network is bundle.s2 and bundle.conditioned:
            inputs = np.concatenate([image, probs.transpose(1, 2, 0)], axis=2)
            mean, std = bundle.s2_mean, bundle.s2_std
        side = min(CALIBRATION_CROP, image.shape[0] // multiple * multiple, image.shape[1] // multiple * multiple)
        crops = []
        for _ in range(crops_per_image):
            y = int(rng.integers(0, image.shape[0] - side + 1))
            x = int(rng.integers(0, image.shape[1] - side + 1))
            crops.append(inputs[y:y + side, x:x + side])
        batches.append(_normalise(np.stack(crops), mean, std))
    return batches


def _normalise(crops, mean, std):
    x = (crops - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


def calibrate_bundle(bundle, images, provenance=None):
    """An int8 bundle: ``bundle`` with batch norm folded and every network's quantizer ranges
    calibrated on ``images`` (float32 (H, W, C) in [0, 1], a few training images)."""
    folded = {name: as_stored(fold_batch_norm(net)) for name, net in bundle.networks().items()}
    stage1_probs = [stage1(bundle.s1, image, bundle.s1_scale, bundle.mean, bundle.std)[0] for image in images]
    ranges = {}
    for name, network in bundle.networks().items():
        batches = calibration_batches(images, bundle, stage1_probs, network)
        ranges[name] = calibrate(folded[name], batches)
    info = {**(provenance or {}), "images": len(images), "torch": torch.__version__,
            "reduce_range": not has_vnni(), "observer": "min/max per tensor (activations), per channel (weights)"}
    return Bundle(s1=folded["s1"], s2=folded["s2"], reference=folded.get("reference"), mean=bundle.mean,
                  std=bundle.std, s1_scale=bundle.s1_scale, class_names=bundle.class_names, palette=bundle.palette,
                  name=bundle.name, provenance={**bundle.provenance, "int8": info}, int8_ranges=ranges)


def calibration_images(spec, count, seed=0):
    """float32 (H, W, C) images in [0, 1]: ``count`` training images of ``spec``, drawn with ``seed``."""
    samples = spec.split("train")
    chosen = np.random.default_rng(seed).choice(len(samples), min(count, len(samples)), replace=False)
    return [as_float_image(read_sample(spec, samples[i])[0], 3)[0] for i in sorted(chosen)], [
        samples[i].id for i in sorted(chosen)]
