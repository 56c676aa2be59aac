"""The numba kernels against their NumPy twins, on awkward shapes, ties and edge cases."""
import numpy as np
import pytest

from iterseg.kernels import (grid_starts, lowest_k, lowest_k_reference, margin_map, margin_map_reference,
                             uncertainty_map, uncertainty_map_reference, window_means,
                             window_means_reference)

SHAPES = [(1, 1), (1, 37), (29, 1), (7, 7), (37, 53), (64, 64), (130, 67)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size, stride", [(1, None), (4, None), (8, 3), (16, 5), (16, 16), (100, None), (9, 20)])
def test_window_means_equals_reference(shape, size, stride):
    prob = np.random.default_rng(hash((shape, size)) % 2**32).random(shape, dtype=np.float32)
    fast = window_means(prob, size, stride)
    slow = window_means_reference(prob, size, stride)
    assert fast.dtype == np.float64 and fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_window_means_large_map_split_across_tasks():
    prob = np.random.default_rng(3).random((1000, 300), dtype=np.float32)
    np.testing.assert_allclose(window_means(prob, 700, 150), window_means_reference(prob, 700, 150), rtol=1e-12)


def test_window_means_accepts_float64_and_integers():
    prob = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(window_means(prob, 2), window_means_reference(prob, 2))
    np.testing.assert_allclose(window_means(prob.astype(np.uint8), 2), window_means_reference(prob, 2))


@pytest.mark.parametrize("bad", [np.zeros(5, np.float32), np.zeros((0, 4), np.float32), np.zeros((2, 2, 2), np.float32)])
def test_window_means_rejects_non_maps(bad):
    with pytest.raises(ValueError, match="2-D"):
        window_means(bad, 2)


@pytest.mark.parametrize("size, stride", [(0, None), (-3, None), (2.5, None), (4, 0), (4, -1)])
def test_window_means_rejects_bad_geometry(size, stride):
    with pytest.raises(ValueError):
        window_means(np.zeros((8, 8), np.float32), size, stride)


@pytest.mark.parametrize("length, size, stride, expected", [
    (10, 4, None, [0, 4, 6]), (8, 4, None, [0, 4]), (3, 4, None, [0]), (10, 4, 3, [0, 3, 6]),
    (11, 4, 3, [0, 3, 6, 7]), (1, 1, None, [0]), (10, 2, 5, [0, 5, 8])])
def test_grid_starts_cover_every_pixel_with_equal_windows(length, size, stride, expected):
    starts = grid_starts(length, size, stride)
    assert starts.tolist() == expected
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + min(size, length)] = True
    assert covered.all() or (stride or size) > size  # a stride beyond the window skips pixels


@pytest.mark.parametrize("n, k", [(1, 0), (1, 1), (5, 3), (5, 9), (1000, 7), (50_000, 3), (50_000, 600), (100, 100)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lowest_k_equals_reference_with_ties(n, k, dtype):
    values = np.random.default_rng(n + k).integers(0, 20, n).astype(dtype)  # many ties
    got = lowest_k(values, k)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, lowest_k_reference(values, k))


def test_lowest_k_ties_go_to_lowest_index_and_nan_last():
    values = np.array([0.3, np.nan, 0.1, 0.3, 0.1, np.nan, 0.0])
    assert lowest_k(values, 7).tolist() == [6, 2, 4, 0, 3, 1, 5]
    big = np.full(40_000, 0.5)
    big[[39_999, 7, 20_000]] = 0.25
    big[[5, 30_000]] = np.nan
    assert lowest_k(big, 4).tolist() == [7, 20_000, 39_999, 0]
    np.testing.assert_array_equal(lowest_k(big, 50), lowest_k_reference(big, 50))


def test_lowest_k_flattens_2d_in_c_order_and_rejects_bad_k():
    grid = np.array([[0.4, 0.1], [0.1, 0.0]])
    assert lowest_k(grid, 3).tolist() == [3, 1, 2]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="k must be"):
            lowest_k(grid, bad)


@pytest.mark.parametrize("shape", SHAPES)
def test_uncertainty_map_equals_reference(shape):
    prob = np.random.default_rng(1).random(shape, dtype=np.float32)
    prob.flat[0] = 0.5
    np.testing.assert_allclose(uncertainty_map(prob), uncertainty_map_reference(prob), atol=1e-6)
    assert uncertainty_map(prob).flat[0] == 1.0


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_margin_map_equals_reference(classes):
    logits = np.random.default_rng(classes).normal(size=(classes, 23, 31))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    probs[:, 0, 0] = 1.0 / classes  # a full tie has margin 0
    got = margin_map(probs)
    np.testing.assert_allclose(got, margin_map_reference(probs), atol=1e-6)
    assert got[0, 0] == 0.0
    with pytest.raises(ValueError, match="K >= 2"):
        margin_map(probs[:1])
