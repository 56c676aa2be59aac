"""int8 calibration on data: an int8 bundle from a float one and a few training images
(the quantization itself is model/quantize.py).

Every network is calibrated on the inputs predict gives it: S1 on each image at stage-1 scale, S2
and the reference network on seeded full-resolution crops (a conditioned S2 with the coarse map at
the same pixels, built by engine/refine.s2_input).

Glossary
    images   float32 (H, W, C) in [0, 1], a few training images
    run      (source, coarse, view) of one image: its engine ArraySource, its CoarseMap (stage-1
             probabilities, never logits) and its stage-1 view float32 (h1, w1, C)
    boxes    int64 (n, 4) of (y, x, side, side) crops inside the image, full resolution
    x        float32 (N, C', h, w) normalised batch, h and w multiples of the U-Net's size multiple
"""
import numpy as np
import torch

from ..engine.coarse import stage1
from ..engine.refine import s2_input
from ..engine.source import ArraySource
from ..model.bundle import Bundle
from ..model.cpu import has_vnni
from ..model.quantize import as_stored, calibrate, fold_batch_norm, input_ranges
from .data import read_sample

CALIBRATION_CROP = 256     # S2 (and the reference network) calibrate on crops of this side


def stage1_runs(bundle, images):
    """[run] for ``images``: stage 1 of the float bundle on each, as predict runs it."""
    runs = []
    for image in images:
        source = ArraySource(image, bundle.in_channels)
        coarse, _, view, _ = stage1(source, bundle.s1, bundle.s1_scale, bundle.mean, bundle.std)
        runs.append((source, coarse, view))
    return runs


def crop_boxes(shape, multiple, rng, count):
    """``count`` seeded boxes (count, 4) of side min(CALIBRATION_CROP, H, W) (down to the size
    multiple) inside an H x W image."""
    side = min(CALIBRATION_CROP, shape[0] // multiple * multiple, shape[1] // multiple * multiple)
    corners = [(int(rng.integers(0, shape[0] - side + 1)), int(rng.integers(0, shape[1] - side + 1)))
               for _ in range(count)]
    return np.array([(y, x, side, side) for y, x in corners], dtype=np.int64)


def stage1_batch(view, multiple, mean, std):
    """x (1, C, h, w) of a stage-1 view cut down to the size multiple."""
    h = view.shape[0] // multiple * multiple or multiple
    w = view.shape[1] // multiple * multiple or multiple
    return _normalise(view[:h, :w][None], mean, std)


def calibration_batches(runs, bundle, network, seed=0, crops_per_image=4):
    """Normalised x tensors for calibrating one of the bundle's networks: S1 sees each stage-1 view;
    S2 and the reference see ``crops_per_image`` seeded CALIBRATION_CROP crops of each image (S2 with
    the coarse map at the same pixels when it is conditioned)."""
    multiple = network.config.size_multiple
    if network is bundle.s1:
        return [stage1_batch(view, multiple, bundle.mean, bundle.std) for _, _, view in runs]
    conditioned = network is bundle.s2 and bundle.conditioned
    mean, std = bundle.normalisation(network.config)
    rng = np.random.default_rng(seed)
    batches = []
    for source, coarse, _ in runs:
        boxes = crop_boxes(source.shape, multiple, rng, crops_per_image)
        crops = s2_input(source.read_boxes(boxes), coarse.at_boxes(boxes) if conditioned else None)
        batches.append(_normalise(crops, mean, std))
    return batches


def _normalise(crops, mean, std):
    """(N, h, w, C) in [0, 1] -> x (N, C, h, w) normalised by ``mean`` / ``std``."""
    x = (crops - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


def calibrate_bundle(bundle, images, provenance=None):
    """An int8 bundle: ``bundle`` with batch norm folded and every network's quantizer ranges
    calibrated on ``images`` (float32 (H, W, C) in [0, 1], a few training images)."""
    folded = {name: as_stored(fold_batch_norm(net)) for name, net in bundle.networks().items()}
    runs = stage1_runs(bundle, images)
    batches = {name: calibration_batches(runs, bundle, network) for name, network in bundle.networks().items()}
    ranges = {name: calibrate(folded[name], batches[name]) for name in folded}
    inputs = {name: input_ranges(folded[name], batches[name]) for name in folded}
    info = {**(provenance or {}), "images": len(images), "torch": torch.__version__,
            "reduce_range": not has_vnni(), "observer": "min/max per tensor (activations), per channel (weights)"}
    return Bundle(s1=folded["s1"], s2=folded["s2"], reference=folded.get("reference"), mean=bundle.mean,
                  std=bundle.std, s1_scale=bundle.s1_scale, class_names=bundle.class_names, palette=bundle.palette,
                  name=bundle.name, provenance={**bundle.provenance, "int8": info}, int8_ranges=ranges,
                  int8_inputs=inputs, window=bundle.window, patches=bundle.patches, context=bundle.context,
                  mpp=bundle.mpp)


def calibration_images(spec, count, seed=0):
    """(float32 (H, W, 3) images in [0, 1], their ids): ``count`` training images of ``spec``,
    drawn with ``seed``."""
    samples = spec.split("train")
    chosen = sorted(np.random.default_rng(seed).choice(len(samples), min(count, len(samples)), replace=False))
    return [ArraySource(read_sample(spec, samples[i])[0], 3).unit for i in chosen], [samples[i].id for i in chosen]


def check_openvino_int8(float_bundle, int8_bundle, spec, images, split="test"):
    """How much quality OpenVINO's int8 costs: the float bundle (precision and backend auto: the
    fastest float run of this CPU) and the int8 bundle on OpenVINO, each at the model's default
    window count and as the baseline, on the first ``images`` images of ``split``. Returns what
    int8 bundles keep in ``provenance["int8"]["openvino_check"]`` (Bundle.openvino_int8_blocker
    reads it): {"spec", "split", "images", "against", "quality": "dice" or "miou", "float",
    "int8" ({method: mean}), "loss": the largest drop over both methods}."""
    from ..api import Segmenter
    from ..engine.settings import resolve_patches
    from .evaluate import evaluate

    patches = (resolve_patches(float_bundle.patches),)
    reference = Segmenter(float_bundle, warm_up=False)
    measured = Segmenter(int8_bundle, precision="int8", backend="openvino", warm_up=False)
    quality = "dice" if spec.num_classes == 2 else "miou"
    means = {}
    for name, segmenter in (("float", reference), ("int8", measured)):
        summary = evaluate(segmenter, spec, split, patches=patches, limit=images)["summary"]
        means[name] = {method: values[quality] for method, values in summary.items()}
    defaults = reference.defaults
    return {"spec": spec.name, "split": split, "images": min(images, len(spec.split(split))),
            "against": f"{defaults['precision']} on {defaults['backend']}", "quality": quality, **means,
            "loss": max(means["float"][m] - means["int8"][m] for m in means["float"])}
