"""Speed of the selection kernels on an 8192 x 8192 float32 map against their NumPy twins.

Target (issue 2): window_means >= 10 GB/s and faster than the reference.
"""
import numpy as np
import pytest

from iterseg.kernels import lowest_k, lowest_k_reference, window_means, window_means_reference

from .timing import interleaved_medians, machine

SIDE = 8192
WINDOW = 512  # N_p = 16 on this map


@pytest.fixture(scope="module")
def prob():
    return np.random.default_rng(0).random((SIDE, SIDE), dtype=np.float32)


def test_window_means_throughput(benchmark, prob):
    means = benchmark.pedantic(window_means, args=(prob, WINDOW), rounds=15, warmup_rounds=2)
    np.testing.assert_allclose(means, window_means_reference(prob, WINDOW), rtol=1e-10)
    medians = interleaved_medians({"numba": lambda: window_means(prob, WINDOW),
                                   "numpy": lambda: window_means_reference(prob, WINDOW)}, rounds=5)
    gbps = prob.nbytes / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update({"GB_per_s": round(gbps, 2), "speedup_vs_numpy": round(
        medians["numpy"] / medians["numba"], 2), "machine": machine()})
    print(f"\nwindow_means {SIDE}^2: {gbps:.1f} GB/s, {medians['numpy'] / medians['numba']:.1f}x the NumPy reference")
    assert gbps >= 10
    assert medians["numba"] < medians["numpy"]


def test_window_means_overlapping_stride(benchmark, prob):
    means = benchmark.pedantic(window_means, args=(prob, WINDOW, WINDOW // 2), rounds=10, warmup_rounds=1)
    assert means.shape == (31, 31)


def test_lowest_k_against_numpy(benchmark, prob):
    values = prob.ravel()
    picked = benchmark.pedantic(lowest_k, args=(values, 64), rounds=10, warmup_rounds=1)
    reference = interleaved_medians({"numpy": lambda: lowest_k_reference(values, 64)}, rounds=1, warmup=0)
    np.testing.assert_array_equal(picked, lowest_k_reference(values, 64))
    speedup = reference["numpy"] / benchmark.stats.stats.median
    benchmark.extra_info.update({"speedup_vs_numpy_stable_argsort": round(speedup, 1), "machine": machine()})
    print(f"\nlowest_k over {SIDE}^2 values: {speedup:.0f}x the NumPy stable argsort")
    assert speedup > 1
