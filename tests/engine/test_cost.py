"""MAC counts: fvcore against a hand count, size scaling, the baselines, and the cost model 1/64 + 1/N_p."""
import numpy as np
import pytest
import torch

import iterseg
from iterseg.engine.cost import (
    CONVENTION,
    _reference_count,
    baseline_cost,
    baseline_macs,
    cost_report,
    count_macs,
    stage1_size,
)
from iterseg.model.store import untrained_bundle
from iterseg.model.unet import UNet, UNetConfig

from synthetic import blob_image, conditioned_bundle, small_bundle


def hand_count(config, height, width):
    """MACs by the textbook formulas: conv Cout*Cin*k*k*Hout*Wout, transposed conv Cin*Cout*k*k*Hin*Win
    (per *input* pixel), batch norm in eval 2 per element (fvcore's convention for an affine norm)."""
    total, level_sizes = 0, [(height >> level) * (width >> level) for level in range(config.depth + 1)]
    widths = [config.width * 2 ** level for level in range(config.depth + 1)]
    norm = 2 if config.norm == "batch" else 0

    def double_conv(cin, cout, pixels):
        return 9 * cin * cout * pixels + 9 * cout * cout * pixels + 2 * norm * cout * pixels

    total += double_conv(config.in_channels, widths[0], level_sizes[0])
    for level in range(1, config.depth + 1):
        total += double_conv(widths[level - 1], widths[level], level_sizes[level])
    for level in reversed(range(config.depth)):
        total += widths[level + 1] * widths[level] * 4 * level_sizes[level + 1]  # transposed 2x2, stride 2
        total += double_conv(2 * widths[level], widths[level], level_sizes[level])
    return total + widths[0] * config.out_channels * level_sizes[0]


@pytest.mark.parametrize("config", [UNetConfig(depth=2, width=4), UNetConfig(depth=3, width=8, norm="none"),
                                    UNetConfig(in_channels=1, out_channels=3, depth=1, width=6)])
def test_fvcore_equals_hand_count(config):
    total, side, _ = _reference_count(config)
    assert total == hand_count(config, side, side)
    assert count_macs(config, 48, 80) == hand_count(config, 48, 80)


def test_scaled_count_equals_a_direct_trace():
    from fvcore.nn import FlopCountAnalysis
    config = UNetConfig(depth=3, width=4)
    model = UNet(config).eval()
    analysis = FlopCountAnalysis(model, torch.zeros(1, 3, 40, 104))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert count_macs(config, 40, 104) == analysis.total()
    assert count_macs(config, 33, 100) == count_macs(config, 40, 104)  # padded to the multiple of 8


def test_default_geometry_on_a_square_image_costs_1_64_plus_1_16():
    seg = iterseg.Segmenter(untrained_bundle())
    macs = seg.macs(2048, 2048, patches=16)
    assert macs["ratio"] == pytest.approx(1 / 64 + 1 / 16, rel=0.02)
    assert macs["convention"] == CONVENTION == "fvcore: 1 multiply-accumulate = 1 flop"
    assert "aten::max_pool2d" in macs["uncounted_ops"]


def test_a_real_prediction_reports_the_same_cost():
    bundle = small_bundle()
    res = iterseg.two_stage(blob_image(256, 256), bundle, patches=16)
    assert res.options["patch_size"] == 16 and len(res.windows) == 16
    assert res.macs["ratio"] == pytest.approx(1 / 64 + 1 / 16, rel=0.02)
    assert res.macs == iterseg.Segmenter(bundle).macs(256, 256, patches=16)


def test_context_is_paid_for():
    bundle = small_bundle()
    plain = iterseg.two_stage(blob_image(256, 256), bundle, patches=4, patch_size=32)
    wide = iterseg.two_stage(blob_image(256, 256), bundle, patches=4, patch_size=32, context=8)
    box = wide.options["s2_input"]
    assert box[0] > 32 and wide.macs["stage2"] == 4 * count_macs(bundle.s2.config, *box)
    assert wide.macs["stage2"] > plain.macs["stage2"] == 4 * count_macs(bundle.s2.config, 32, 32)
    assert np.isfinite(wide.probs).all()


@pytest.mark.parametrize("shape, scale, expected", [((96, 128), 0.125, (12, 16)), ((90, 77), 0.125, (11, 10)),
                                                    ((3, 5), 0.125, (1, 1)), ((100, 60), 1.0, (100, 60))])
def test_stage1_size(shape, scale, expected):
    assert stage1_size(shape, scale) == expected


def test_the_three_baselines_and_the_report():
    plain = small_bundle()
    with_reference, _ = conditioned_bundle()
    lean, _ = conditioned_bundle(with_reference=False)
    shape = (96, 128)
    s2 = count_macs(plain.s2.config, *shape)
    s1 = count_macs(plain.s1.config, *stage1_size(shape, plain.s1_scale))
    assert baseline_macs(plain, shape) == baseline_macs(with_reference, shape) == s2  # S2 or the reference
    assert baseline_macs(lean, shape) == s1 + count_macs(lean.s2.config, *shape)     # stage 1 + conditioned S2
    report = cost_report(plain, shape, s1, (32, 32), 5)
    assert report["stage2"] == 5 * count_macs(plain.s2.config, 32, 32) and report["total"] == s1 + report["stage2"]
    assert report["ratio"] == report["total"] / s2 and report["convention"] == CONVENTION
    assert cost_report(plain, shape, s1)["stage2"] == 0
    for bundle in (plain, with_reference, lean):
        cost = baseline_cost(bundle, shape)
        assert cost["ratio"] == 1.0 and cost["total"] == cost["baseline"] == cost["stage1"] + cost["stage2"]
    assert baseline_cost(lean, shape)["stage1"] == s1 and baseline_cost(plain, shape)["stage1"] == 0
