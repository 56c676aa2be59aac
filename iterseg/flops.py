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
from .models import UNet

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


def cost_report(s1_config, s2_config, image_hw, s1_hw, box_hw, n_boxes):
    """MACs of stage 1 on s1_hw, stage 2 on n_boxes inputs of box_hw, and the baseline on image_hw."""
    stage1 = count_macs(s1_config, *s1_hw) if s1_hw else 0
    stage2 = n_boxes * count_macs(s2_config, *box_hw) if n_boxes else 0
    baseline = count_macs(s2_config, *image_hw)
    total = stage1 + stage2
    return {"stage1": stage1, "stage2": stage2, "total": total, "baseline": baseline,
            "ratio": total / baseline, "convention": CONVENTION,
            "uncounted_ops": sorted(set(uncounted_ops(s1_config)) | set(uncounted_ops(s2_config)))}
