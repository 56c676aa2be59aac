"""The numba kernels against their NumPy twins, on awkward shapes, ties and edge cases, and fuzzed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iterseg.kernels import (
    lowest_k,
    lowest_k_reference,
    margin_map,
    margin_map_reference,
    uncertainty_map,
    uncertainty_map_reference,
    window_means,
    window_means_by_rows,
    window_means_reference,
)

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


@pytest.mark.parametrize("bad", [np.zeros(5, np.float32), np.zeros((0, 4), np.float32),
                                 np.zeros((2, 2, 2), np.float32)])
def test_window_means_rejects_non_maps(bad):
    with pytest.raises(ValueError, match="2-D"):
        window_means(bad, 2)


@pytest.mark.parametrize("size, stride", [(0, None), (-3, None), (2.5, None), (4, 0), (4, -1)])
def test_window_means_rejects_bad_geometry(size, stride):
    with pytest.raises(ValueError):
        window_means(np.zeros((8, 8), np.float32), size, stride)


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


def test_window_means_of_a_map_given_in_strips_equals_the_whole_map_to_the_last_bit():
    prob = np.random.default_rng(4).random((300, 70), dtype=np.float32)
    asked = []

    def rows(top, bottom):
        asked.append((top, bottom))
        return prob[top:bottom]

    got = window_means_by_rows(rows, prob.shape, 40, 15, strip_rows=50)
    np.testing.assert_array_equal(got, window_means(prob, 40, 15))
    assert asked[0][0] == 0 and asked[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(asked, asked[1:], strict=False))  # consecutive strips
    assert max(bottom - top for top, bottom in asked) <= 50


@given(height=st.integers(1, 40), width=st.integers(1, 40), size=st.integers(1, 50), stride=st.integers(1, 50),
       dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int32]), seed=st.integers(0, 2 ** 16))
def test_fuzz_window_means(height, width, size, stride, dtype, seed):
    rng = np.random.default_rng(seed)
    prob = (rng.random((height, width)) * (255 if dtype in (np.uint8, np.int32) else 1)).astype(dtype)
    got = window_means(prob, size, stride)  # integer maps are converted to float32
    np.testing.assert_allclose(got, window_means_reference(prob.astype(np.float64), size, stride), rtol=1e-5)


@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=300),
       k=st.integers(-3, 320))
def test_fuzz_lowest_k(values, k):
    array = np.array(values, dtype=np.float64)
    try:
        got = lowest_k(array, k)
    except ValueError as exc:
        assert k < 0 and "k" in str(exc)
        return
    np.testing.assert_array_equal(got, lowest_k_reference(array, k))
