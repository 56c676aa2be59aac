"""The CPU fast path: bf16 autocast with channels_last against fp32, and torch.compile on top.

Speed-ups are ratios of interleaved medians in one run; the Dice change of bf16 on real data is in
the sweep results (benchmarks/results/<dataset>.md, "bf16 vs fp32" lines).
"""
import time

import torch

import iterseg
from iterseg.model.runtime import Runner

from .test_pipeline_speed import synthetic_image
from .timing import interleaved_medians, machine

SIDE = 2048


def test_bf16_against_fp32(benchmark):
    seg = iterseg.load("ph2")  # trained: confident outputs, so the comparison of windows means something
    image = synthetic_image(SIDE)
    fast = benchmark.pedantic(seg.predict, args=(image,), kwargs={"patches": 16, "precision": "bf16"},
                              rounds=3, warmup_rounds=1)
    exact = seg.predict(image, patches=16)
    shared = len(set(map(tuple, fast.windows)) & set(map(tuple, exact.windows)))
    agreement = (fast.mask == exact.mask).mean()
    assert shared >= 14 and agreement > 0.999, (shared, agreement)
    medians = interleaved_medians({
        "two_stage_fp32": lambda: seg.predict(image, patches=16),
        "two_stage_bf16": lambda: seg.predict(image, patches=16, precision="bf16"),
        "baseline_fp32": lambda: seg.predict_baseline(image),
        "baseline_bf16": lambda: seg.predict_baseline(image, precision="bf16")}, rounds=3)
    speedups = {kind: medians[f"{kind}_fp32"] / medians[f"{kind}_bf16"] for kind in ("two_stage", "baseline")}
    benchmark.extra_info.update({"medians_s": medians, "bf16_speedup": speedups, "windows_shared": shared,
                                 "mask_agreement": agreement, "machine": machine()})
    print(f"\n{SIDE}^2: bf16 speed-up two-stage {speedups['two_stage']:.2f}x, baseline {speedups['baseline']:.2f}x "
          f"({', '.join(f'{k} {v:.3f} s' for k, v in medians.items())})")
    assert speedups["baseline"] > 1.5


def test_torch_compile_cost_and_gain(benchmark):
    """Compile time of S2 for one batch shape against the time it saves per batch (bf16)."""
    model = iterseg.load_bundle("untrained").s2
    x = torch.rand(16, 3, 224, 224)
    eager, compiled = Runner(model, "bf16"), Runner(model, "bf16", compile=True)
    torch._dynamo.reset()
    with torch.inference_mode(), torch._inductor.config.patch(fx_graph_cache=False):  # a cold compile
        start = time.perf_counter()
        out = compiled(x)
        compile_s = time.perf_counter() - start
        torch.testing.assert_close(torch.sigmoid(out), torch.sigmoid(eager(x)), atol=0.02, rtol=0)
        benchmark.pedantic(compiled, args=(x,), rounds=5, warmup_rounds=1)
        medians = interleaved_medians({"eager": lambda: eager(x), "compiled": lambda: compiled(x)}, rounds=5)
    saved = medians["eager"] - medians["compiled"]
    break_even = compile_s / saved if saved > 0 else float("inf")
    benchmark.extra_info.update({"compile_s": compile_s, "medians_s": medians, "batches_to_break_even": break_even,
                                 "machine": machine()})
    print(f"\ntorch.compile S2, batch 16 x 224^2 bf16: compile {compile_s:.1f} s, eager {medians['eager']:.3f} s, "
          f"compiled {medians['compiled']:.3f} s per batch -> pays off after {break_even:.0f} batches of this shape")
