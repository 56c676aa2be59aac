"""Cost: multiply-accumulates counted by fvcore for stage 1, stage 2 and the full-resolution baseline.

fvcore counts one multiply-accumulate as one "flop" (and skips ReLU, max-pool and concatenation).
A fully convolutional U-Net's count is exactly proportional to its input's pixel count once height
and width are multiples of 2 ** depth, so each architecture is traced once at a reference size and
the counts of other sizes are scaled from it.
"""
import functools
import warnings

import torch

from .infer import align_up
from .model.unet import UNet
from .stage1 import stage1_size

CONVENTION = "fvcore: 1 multiply-accumulate = 1 flop"


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
    total, side, _ = _reference_count(config)
    multiple = config.size_multiple
    pixels = align_up(height, multiple) * align_up(width, multiple)
    return total * pixels // (side * side)


def uncounted_ops(config):
    """Operator names fvcore saw but did not count (e.g. aten::max_pool2d)."""
    return list(_reference_count(config)[2])


def baseline_macs(bundle, height, width):
    """MACs of the bundle's full-resolution baseline on an H x W image (see Bundle.baseline_kind):
    the reference network's or S2's pass, plus stage 1 when a conditioned S2 needs its input."""
    if bundle.baseline_kind == "reference":
        return count_macs(bundle.reference.config, height, width)
    macs = count_macs(bundle.s2.config, height, width)
    if bundle.baseline_kind == "s1+s2":
        macs += count_macs(bundle.s1.config, *stage1_size(height, width, bundle.s1_scale))
    return macs


def cost_report(bundle, image_hw, s1_hw, box_hw, n_boxes):
    """MACs of stage 1 on s1_hw, stage 2 on n_boxes inputs of box_hw, and the baseline on image_hw."""
    stage1 = count_macs(bundle.s1.config, *s1_hw) if s1_hw else 0
    stage2 = n_boxes * count_macs(bundle.s2.config, *box_hw) if n_boxes else 0
    baseline = baseline_macs(bundle, *image_hw)
    total = stage1 + stage2
    networks = [net for net in (bundle.s1, bundle.s2, bundle.reference) if net is not None]
    return {"stage1": stage1, "stage2": stage2, "total": total, "baseline": baseline,
            "ratio": total / baseline, "convention": CONVENTION,
            "uncounted_ops": sorted(set().union(*(uncounted_ops(net.config) for net in networks)))}


def baseline_cost(bundle, image_hw):
    """The cost report of the baseline itself (ratio 1): its stage-1 part (a conditioned bundle
    without a reference network) and its full-resolution pass."""
    report = cost_report(bundle, image_hw, None, None, 0)
    stage1 = (count_macs(bundle.s1.config, *stage1_size(*image_hw, bundle.s1_scale))
              if bundle.baseline_kind == "s1+s2" else 0)
    report.update(stage1=stage1, stage2=report["baseline"] - stage1, total=report["baseline"], ratio=1.0)
    return report
