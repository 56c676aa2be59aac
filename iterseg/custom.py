"""The two-stage method for your own networks: ``two_stage_inference(inputs, coarse, fine, ...)``, as
MONAI's ``sliding_window_inference(inputs, roi_size, sw_batch_size, predictor)`` is for sliding windows.

The networks run inside the one engine (engine/loop.py) through the adapter of engine/networks.py,
so every selection option of ``Segmenter.predict`` means the same here.

Glossary: see engine/loop.py (Result) and engine/networks.py (x, output, logits, macs).
"""
import math
import time

import numpy as np
import torch

from .engine import loop
from .engine.cost import stage1_size
from .engine.infer import planned_windows, window_cost
from .engine.networks import COUNT_PIXELS, COUNT_SIDE, OUTPUTS, Network, Networks, TensorSource, first_line
from .engine.settings import Settings, check_windows
from .engine.source import ArraySource, as_array
from .errors import InputError
from .model.runtime import warm_up_kernels

DEFAULT_SCALE = 0.125


def two_stage_inference(inputs, coarse, fine, *, outputs="logits", scale=DEFAULT_SCALE, patches=None,
                        patch_size=None, score=None, stride=None, budget=None, budget_gmacs=None,
                        threshold=None, rounds=1, context=0, batch_size=None, max_overlap=None, windows=None,
                        size_multiple=1, mean=None, std=None, count_macs=True, backend="torch",
                        precision="fp32", show_progress=False) -> loop.Result:
    """Segment one image with your own coarse and fine networks: ``coarse`` on the image resized by
    ``scale`` everywhere, ``fine`` at full resolution on the windows that most need it; the same method,
    options and Result as ``Segmenter.predict``.

    inputs: a torch tensor (C, H, W) or (1, C, H, W), channel-first, used AS IT IS (cast to float32,
        moved to the CPU; no scaling): normalise it as your networks expect, as for MONAI. Or a NumPy
        array (H, W) / (H, W, C), channel-last as read from disk, which iterseg maps to [0, 1] like
        ``predict`` does (uint8 / 255, uint16 / 65535, see engine/source.unit_range).
    coarse, fine: torch modules or plain functions taking a float32 (N, C, h, w) tensor and returning
        (N, K, h, w) with the same N, h, w: K = 1 for binary (sigmoid), K > 1 classes (softmax). They are
        run as given (put modules in eval() mode; their device is the one of their first parameter,
        else the CPU; no gradients are kept). Both must return the same K.
    outputs: 'logits' (default) or 'probs', what the networks return; or a pair (coarse's, fine's).
    scale: the coarse network sees the image resized by this factor (INTER_AREA; default 1/8), and
        its probabilities are upsampled back bilinearly. Train it on your images shrunk by the same factor.
    size_multiple: the networks need sides divisible by this (e.g. 2 ** number of poolings of a U-Net;
        default 1); the coarse input and every window (with context) are grown to it by mirroring.
    mean, std: subtracted / divided per channel (a number or C numbers) before the networks see the
        image; default none (0 and 1), so a tensor you normalised is never touched.
    patches, patch_size, score, stride, budget, budget_gmacs, threshold, rounds, context, batch_size,
        max_overlap, windows: as in ``Segmenter.predict`` (patches default 16; patch_size default
        ceil(max(H, W) / patches) rounded up to size_multiple; context: pixels of image the fine network
        sees around each window, at least its receptive radius to match its whole-image output).
        budget / budget_gmacs need torch modules (MACs are counted).
    backend: 'torch' (default): the networks run as given; 'openvino': both torch modules are converted
        by OpenVINO (``ov.convert_model``, a second or two each, once per call) and run by its CPU
        plugin in ``precision`` ('fp32' default, 'bf16', or 'auto': the fastest this CPU has), on the
        CPU; 'auto': OpenVINO where iterseg's probe finds it faster (model/runtime.py), else torch.
    count_macs: count the modules' MACs (default True). fvcore traces each module once per input shape
        (stage 1, a window with its context, the whole image: a forward pass each, the whole image's on
        at most a 1024 px square, scaled by pixel count) before the run, so ``seconds`` leave it out
        (``options["count_seconds"]`` says what it took); False skips it (``macs`` None, no budget).

    Returns a Result (not a tensor, unlike MONAI): ``probs`` float32 NumPy (H, W) foreground
    probabilities for K = 1, else (K, H, W); ``mask`` uint8 (H, W); ``windows`` int64 (N, 4) of
    (y, x, h, w); ``seconds``; ``macs`` as for ``predict`` (fvcore, 1 multiply-accumulate = 1 flop,
    counted on the modules at the padded input shapes; baseline = fine over the whole image) when both
    networks are torch modules (and count_macs), else None. ``torch.from_numpy(result.probs)`` gives a tensor.
    """
    source = read_inputs(inputs)
    networks = make_networks(coarse, fine, source.channels, outputs, scale, size_multiple, mean, std,
                             count_macs)
    runs_on = networks.compile_for(backend, precision)
    if not networks.countable and (budget is not None or budget_gmacs is not None):
        raise InputError("budget and budget_gmacs need the MACs of both networks, which fvcore counts only for "
                         "torch modules with count_macs=True; pass those, or patches= / threshold= instead.")
    settings = Settings.from_options(patches=patches, patch_size=patch_size, score=score, stride=stride,
                                     budget=budget, budget_gmacs=budget_gmacs, threshold=threshold, rounds=rounds,
                                     context=context, batch_size=batch_size, max_overlap=max_overlap,
                                     precision="fp32", backend="torch")  # users' networks run as given
    warm_up_kernels()
    with torch.inference_mode():
        networks.probe()
    if windows is not None:
        windows = check_windows(windows, source.shape)
    counting, note = count_ahead(networks, settings, source.shape, windows) if networks.countable else (0.0, None)
    result = loop.two_stage(source, networks, settings, windows, show_progress)
    result.options["count_seconds"] = counting
    result.notes.extend([note] if note else [])
    return _finish(result, networks, runs_on)


def count_ahead(networks, settings, shape, windows):
    """Trace the modules with fvcore on the input shapes the run counts (stage 1, one window with its
    context, the whole image) before it starts, so that ``seconds`` leave the counting out: (the seconds
    the counting took, a note or None). A module fvcore cannot trace is run uncounted (``macs`` None)."""
    start = time.perf_counter()
    coarse, fine = networks.s1.config, networks.s2.config
    plan = settings.plan(shape, fine.out_channels, fine.size_multiple) if windows is None else None
    try:
        coarse.count_macs(*stage1_size(shape, networks.s1_scale))
        fine.count_macs(*shape)
        if plan is not None:
            planned_windows(plan, fine, shape)
        elif len(windows):
            window_cost(fine, windows[0, 2:], settings.context, shape)
    except Exception as exc:  # fvcore's tracer meets what it cannot trace (data-dependent control flow, ...)
        why = f"fvcore could not count the networks' MACs ({first_line(exc)})"
        if settings.budget is not None or settings.budget_gmacs is not None:
            raise InputError(f"{why}; budget needs them: pass patches= or threshold= instead.") from exc
        coarse.module = fine.module = None
        return time.perf_counter() - start, f"{why}; macs is None"
    return time.perf_counter() - start, None


def make_networks(coarse, fine, channels, outputs, scale, size_multiple, mean, std, count):
    """The bundle stand-in of engine/networks.py for the arguments of two_stage_inference, or InputError."""
    pair = outputs if isinstance(outputs, (tuple, list)) and len(outputs) == 2 else (outputs, outputs)
    if any(not isinstance(value, str) or value not in OUTPUTS for value in pair):
        raise InputError(f"outputs must be 'logits' or 'probs' (or a pair of them: coarse, fine), got {outputs!r}.")
    _check_number("scale", scale, 0, 1)
    if isinstance(size_multiple, bool) or not isinstance(size_multiple, (int, np.integer)) or size_multiple < 1:
        raise InputError(f"size_multiple must be an integer >= 1, got {size_multiple!r}.")
    return Networks(Network("coarse", coarse, pair[0], channels, int(size_multiple), count),
                    Network("fine", fine, pair[1], channels, int(size_multiple), count),
                    _per_channel("mean", mean, 0.0, channels), _per_channel("std", std, 1.0, channels),
                    float(scale))


def read_inputs(inputs):
    """The source of ``inputs``: a tensor's values as they are (TensorSource), an array's mapped to [0, 1]
    (ArraySource)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 4 and inputs.shape[0] == 1:
            inputs = inputs[0]
        if inputs.ndim != 3 or min(inputs.shape) < 1:
            raise InputError(f"inputs must be a (C, H, W) or (1, C, H, W) tensor (one image, channel-first), "
                             f"got shape {tuple(inputs.shape)}.")
        if inputs.is_complex():
            raise InputError(f"inputs must hold real numbers, got a {inputs.dtype} tensor.")
        image = inputs.detach().cpu().float().as_subclass(torch.Tensor).permute(1, 2, 0).numpy()
        if not np.isfinite(image).all():
            raise InputError("inputs contain NaN or infinite values; replace them (e.g. torch.nan_to_num) first.")
        return TensorSource(image)
    array = as_array(inputs)
    if array.ndim not in (2, 3):
        raise InputError(f"inputs must be a torch tensor (C, H, W) or a NumPy array (H, W) / (H, W, C), "
                         f"got an array of shape {array.shape}.")
    return ArraySource(array, 1 if array.ndim == 2 else array.shape[2])


def _finish(result, networks, runs_on):
    """The Result with what a user's networks change: macs None unless both are modules, notes;
    ``runs_on``: the runtime report (precision, backend, why) of OpenVINO, or None (run as given)."""
    options = result.options
    for name in ("precision", "backend"):
        options.pop(f"{name}_reason", None)
        options[name] = "as given"
    options.update(runs_on or {})
    options.update(networks="own", scale=networks.s1_scale, size_multiple=networks.s2.config.size_multiple)
    if networks.countable and (networks.s1.config.scaled or networks.s2.config.scaled):
        result.notes.append(f"MACs of inputs above {COUNT_PIXELS} pixels scaled from a {COUNT_SIDE} px square by "
                            "pixel count (exact for a fully convolutional network)")
    for network in (networks.s1, networks.s2):
        if network.training:
            result.notes.append(f"the {network.role} network is in training mode; call .eval() on it for "
                                "inference (batch norm, dropout)")
    return result


def _check_number(name, value, low, high):
    """InputError unless low < value <= high."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            math.isfinite(value) and low < value <= high):
        raise InputError(f"{name} must be a number > {low} and <= {high}, got {value!r}.")


def _per_channel(name, value, default, channels):
    """``value`` (None, a number or ``channels`` numbers) as a tuple of ``channels`` floats."""
    if value is None:
        return (default,) * channels
    try:
        values = np.atleast_1d(np.asarray(value, dtype=np.float64)) if np.ndim(value) <= 1 else np.empty(0)
    except (TypeError, ValueError):
        values = np.empty(0)
    if len(values) == 1:
        values = np.repeat(values, channels)
    if len(values) != channels or not np.isfinite(values).all() or (name == "std" and (values <= 0).any()):
        raise InputError(f"{name} must be a number or {channels} numbers (one per channel)"
                         f"{', all > 0' if name == 'std' else ''}, got {value!r}.")
    return tuple(float(v) for v in values)
