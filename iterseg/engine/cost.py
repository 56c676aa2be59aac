"""Cost: multiply-accumulates counted by fvcore for stage 1, stage 2 and the full-resolution baseline.

fvcore counts one multiply-accumulate as one "flop" (and skips ReLU, max-pool and concatenation).
A fully convolutional U-Net's count is exactly proportional to its input's pixel count once height
and width are multiples of 2 ** depth, so each architecture is traced once at a reference size and
the counts of other sizes are scaled from it.

Glossary
    shape    (H, W) of the full-resolution image
    macs     {"stage1", "stage2", "total", "baseline"} ints, "ratio" = total / baseline (float),
             "convention" (the line above) and "uncounted_ops" (operators fvcore saw but did not count)
"""
import functools
import warnings

import torch

from ..model.unet import UNet

CONVENTION = "fvcore: 1 multiply-accumulate = 1 flop"


def align_up(value, multiple):
    return -(-int(value) // multiple) * multiple


def stage1_size(shape, scale):
    """(h1, w1) of the stage-1 input for an H x W image: the size times ``scale``, rounded, >= 1."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


@functools.lru_cache(maxsize=32)
def _reference_count(config):
    """(MACs at the reference size, reference side, operators fvcore could not count) for a config."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fvcore.nn imports torch.jit.script
        from fvcore.nn import FlopCountAnalysis
    side = 4 * config.size_multiple
    model = UNet(config).eval()
    with torch.inference_mode():
        analysis = FlopCountAnalysis(model, torch.zeros(1, config.in_channels, side, side))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(analysis.total())
        unsupported = sorted(analysis.unsupported_ops())
    return total, side, tuple(unsupported)


def count_macs(config, height, width):
    """MACs of one forward pass of a U-Net with ``config`` on an input padded from height x width."""
    if hasattr(config, "count_macs"):  # a user's network counts itself (engine/networks.py)
        return config.count_macs(height, width)
    total, side, _ = _reference_count(config)
    multiple = config.size_multiple
    pixels = align_up(height, multiple) * align_up(width, multiple)
    return total * pixels // (side * side)


def uncounted_ops(config):
    """Operator names fvcore saw but did not count (e.g. aten::max_pool2d)."""
    if hasattr(config, "uncounted_ops"):  # a user's network (engine/networks.py)
        return config.uncounted_ops()
    return list(_reference_count(config)[2])


def baseline_macs(bundle, shape):
    """MACs of the bundle's full-resolution baseline on an H x W image (see Bundle.baseline_kind):
    the reference network's or S2's pass, plus stage 1 when a conditioned S2 needs its input."""
    if bundle.baseline_kind == "reference":
        return count_macs(bundle.reference.config, *shape)
    return count_macs(bundle.s2.config, *shape) + baseline_stage1_macs(bundle, shape)


def baseline_stage1_macs(bundle, shape):
    """The stage-1 part of the baseline: stage 1 over the image for an 's1+s2' baseline, else 0."""
    if bundle.baseline_kind != "s1+s2":
        return 0
    return count_macs(bundle.s1.config, *stage1_size(shape, bundle.s1_scale))


def whole_input(config, shape):
    """(h, w) of a network of ``config`` over a whole H x W image: the image grown to its size multiple."""
    return tuple(align_up(side, config.size_multiple) for side in shape)


def runs_whole(config, shape, windows, window_macs):
    """True when ``windows`` boxes of ``window_macs`` each cost at least stage 2 (``config``) over the
    whole H x W image: the engine then runs that instead (engine/loop.refine_rounds), here and in
    every cost computed without running (api.planned_macs)."""
    return windows > 0 and windows * window_macs >= count_macs(config, *whole_input(config, shape))


def cost_report(bundle, shape, stage1_macs, box_hw=None, boxes=0, stage2_macs=None):
    """The macs dict: stage 1 as run, stage 2 on ``boxes`` network inputs of ``box_hw`` (or
    ``stage2_macs`` as counted by the run), and the baseline on the H x W image."""
    stage2 = stage2_macs if stage2_macs is not None else boxes * count_macs(bundle.s2.config, *box_hw) if boxes else 0
    baseline = baseline_macs(bundle, shape)
    total = stage1_macs + stage2
    networks = [net for net in (bundle.s1, bundle.s2, bundle.reference) if net is not None]
    return {"stage1": int(stage1_macs), "stage2": int(stage2), "total": int(total), "baseline": int(baseline),
            "ratio": total / baseline, "convention": CONVENTION,
            "uncounted_ops": sorted(set().union(*(uncounted_ops(net.config) for net in networks)))}


def baseline_cost(bundle, shape):
    """The cost report of the baseline itself (ratio 1)."""
    stage1 = baseline_stage1_macs(bundle, shape)
    report = cost_report(bundle, shape, stage1)
    report.update(stage2=report["baseline"] - stage1, total=report["baseline"], ratio=1.0)
    return report
