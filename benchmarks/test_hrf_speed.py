"""One HRF image (3504 x 2336): two-stage against the full-resolution baseline and MONAI's sliding window.

Target (issue 4): at the smallest N_p whose Dice on the HRF test split is >= 99 % of the baseline's
(read from benchmarks/results/hrf.json, which the sweep writes), two-stage is >= 5x faster than MONAI's
``sliding_window_inference`` (ROI 512, overlap 0.25, Gaussian blending) with the same network, both fp32.
Measured 2026-11-22: not met. HRF first reaches 99 % at N_p = 128 (80 % of the MACs), where two-stage is
2.4x faster than MONAI (see benchmarks/README.md). The run records the figure (``meets_5x_target``) and
fails only if two-stage stops beating MONAI there at all; N_p = 16 is timed too for reference.
"""
import numpy as np
import pytest
import torch

import iterseg
from iterseg.engine.coarse import stage1
from iterseg.engine.refine import s2_reader
from iterseg.engine.settings import default_window_side
from iterseg.engine.source import ArraySource
from iterseg.training.metrics import dice

from .conftest import sweep_findings
from .timing import interleaved_medians, machine

inferers = pytest.importorskip("monai.inferers", reason="MONAI is a benchmark extra: pip install -e .[bench]")

ROI, OVERLAP, SW_BATCH = 512, 0.25, 4


def monai_probs(seg, image, precision="fp32"):
    """Foreground probabilities (H, W) of the baseline's network through MONAI's sliding window with
    Gaussian blending; a conditioned S2 gets the stage-1 probabilities as extra channels, as in the baseline."""
    bundle = seg.bundle
    source = ArraySource(image, bundle.in_channels)
    conditioned = bundle.baseline_kind == "s1+s2"  # the network's input as the engine builds it
    coarse = stage1(source, bundle.runners(precision)[0], bundle.s1_scale, bundle.mean,
                    bundle.std)[0] if conditioned else None
    network = bundle.baseline_runner(precision)  # the full-resolution model of the baseline
    mean, std = bundle.normalisation(network.config)
    pixels = s2_reader(source, coarse, conditioned)(np.array([[0, 0, *source.shape]]))[0]
    pixels = (pixels - np.float32(mean)) / np.float32(std)
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    with torch.inference_mode():
        out = inferers.sliding_window_inference(x, ROI, SW_BATCH, lambda batch: torch.sigmoid(network(batch)),
                                                overlap=OVERLAP, mode="gaussian")
    return out[0, 0].numpy()


def chosen_patches():
    """(N_p, whether it reached 99 % of the baseline's Dice in the sweep)."""
    findings = sweep_findings("hrf")
    if findings is None:
        pytest.skip("run the HRF sweep first: python -m benchmarks.sweep --spec hrf --model hrf")
    n = findings["smallest_patches_at_99pct_of_baseline"]
    if n is not None:
        return n, True
    best = max(findings["per_patches"], key=lambda e: e["dice"])
    return best["patches"], False


def test_hrf_two_stage_vs_baseline_vs_monai(benchmark, hrf_sample):
    image, target, fov, sample_id = hrf_sample
    seg = iterseg.load("hrf")
    patches, reached = chosen_patches()
    size = default_window_side(image.shape[:2], 16, seg.bundle.s2.config.size_multiple)  # the sweep's grid
    options = {"patches": patches, "patch_size": size}
    result = benchmark.pedantic(seg.predict, args=(image,), kwargs=options, rounds=3, warmup_rounds=1)
    assert result.mask.shape == image.shape[:2] and len(result.windows) == patches

    base = seg.predict_baseline(image)
    sliding = monai_probs(seg, image) >= 0.5
    agreement = dice(sliding, base.mask > 0)
    assert agreement > 0.97, f"MONAI's sliding window disagrees with the whole-image baseline: Dice {agreement:.3f}"

    medians = interleaved_medians({"two_stage": lambda: seg.predict(image, **options),
                                   "two_stage_bf16": lambda: seg.predict(image, precision="bf16", **options),
                                   "two_stage_np16": lambda: seg.predict(image, patches=16, patch_size=size),
                                   "baseline": lambda: seg.predict_baseline(image),
                                   "monai": lambda: monai_probs(seg, image)}, rounds=3)
    speedup = medians["monai"] / medians["two_stage"]
    quality = {name: dice(mask, target, fov) for name, mask in
               (("two_stage", result.mask > 0), ("baseline", base.mask > 0), ("monai", sliding))}
    benchmark.extra_info.update({"image": sample_id, "patches": patches, "patch_size": size,
                                 "reached_99pct_of_baseline_in_sweep": reached, "medians_s": medians,
                                 "speedup_vs_monai": speedup, "meets_5x_target": speedup >= 5,
                                 "speedup_vs_monai_bf16": medians["monai"] / medians["two_stage_bf16"],
                                 "speedup_vs_monai_np16": medians["monai"] / medians["two_stage_np16"],
                                 "macs_ratio": result.macs["ratio"],
                                 "dice": quality, "monai_vs_baseline_dice": agreement, "machine": machine()})
    print(f"\nHRF {sample_id}, N_p={patches} ({size} px): two-stage {medians['two_stage']:.2f} s "
          f"(bf16 {medians['two_stage_bf16']:.2f} s; N_p=16 {medians['two_stage_np16']:.2f} s), baseline "
          f"{medians['baseline']:.2f} s, MONAI sliding window {medians['monai']:.2f} s -> {speedup:.1f}x faster "
          f"than MONAI (target 5x: {'met' if speedup >= 5 else 'NOT met'}); Dice "
          f"{ {name: round(float(value), 4) for name, value in quality.items()} }")
    assert speedup > 1
