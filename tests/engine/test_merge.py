"""Merging refined windows over the coarse map: pasted (later wins) or blended (ramp weights), and a
Merger evaluated at any pixels equal to its whole map."""
import numpy as np
import pytest

from iterseg.engine.merge import WindowMerger, blend, paste, ramp_weights, take


def zeros_base(classes=1):
    return lambda rows, cols: np.zeros((classes, len(rows), len(cols)), np.float32)


def coarse_base(shape, classes=2, seed=0):
    """A base map (K, H, W) and its base(rows, cols) function."""
    full = np.random.default_rng(seed).random((classes,) + shape, dtype=np.float32)
    return full, lambda rows, cols: take(full, rows, cols).copy()


def random_windows(rng, shape, side, count):
    ys = rng.integers(0, shape[0] - side + 1, count)
    xs = rng.integers(0, shape[1] - side + 1, count)
    return np.stack([ys, xs, np.full(count, side), np.full(count, side)], axis=1).astype(np.int64)


def test_paste_writes_each_window_and_the_later_one_wins():
    target = np.zeros((1, 10, 12), np.float32)
    windows = np.array([[0, 0, 4, 4], [2, 2, 4, 4]])
    values = np.stack([np.full((1, 4, 4), 1.0), np.full((1, 4, 4), 2.0)], 1)
    paste(target, np.arange(10), np.arange(12), windows, values)
    assert target[0, 0, 0] == 1 and target[0, 3, 3] == 2 and target[0, 5, 5] == 2 and target[0, 7, 7] == 0
    assert target[0, :6, :6].sum() == 12 * 1 + 16 * 2


def test_paste_into_a_strided_part_of_the_image():
    rows, cols = np.arange(0, 20, 3), np.array([1, 2, 5, 9, 10, 11])
    target = np.zeros((1, len(rows), len(cols)), np.float32)
    values = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    paste(target, rows, cols, np.array([[4, 4, 6, 6]]), values)
    expected = np.zeros((1, 20, 12), np.float32)
    expected[:, 4:10, 4:10] = values[:, 0]
    np.testing.assert_array_equal(target, expected[:, rows][:, :, cols])


def test_ramp_weights():
    ramp = ramp_weights(8, 12)
    assert ramp.shape == (1, 8, 12) and ramp.min() > 0 and ramp.max() == 1
    np.testing.assert_allclose(ramp, ramp[:, ::-1, ::-1])
    assert ramp[0, 0, 0] == pytest.approx(1 / 3 * 1 / 4) and not ramp.flags.writeable  # ramps of 2 and 3 px


def test_blending_equal_windows_keeps_their_value_and_leaves_the_rest():
    merger = WindowMerger(zeros_base(), (20, 20), blended=True)
    merger.add(np.array([[0, 0, 8, 12], [4, 6, 8, 12]]), np.full((1, 2, 8, 12), 0.7, np.float32))
    merged = merger.full()
    covered = np.zeros((20, 20), bool)
    covered[0:8, 0:12] = covered[4:12, 6:18] = True
    np.testing.assert_allclose(merged[0][covered], 0.7, rtol=1e-6)
    assert (merged[0][~covered] == 0).all()


def test_blending_averages_overlaps_by_the_ramp_weights():
    windows = np.array([[0, 0, 8, 8], [0, 4, 8, 8]])
    target = np.zeros((1, 8, 12), np.float32)
    blend(target, np.arange(8), np.arange(12), [(windows, np.stack([np.full((1, 8, 8), 1.0),
                                                                    np.full((1, 8, 8), 3.0)], 1))])
    ramp = ramp_weights(8, 8)[0]
    left, right = ramp[:, 4:], ramp[:, :4]  # the overlap, columns 4-7, seen from each window
    np.testing.assert_allclose(target[0, :, 4:8], (left * 1 + right * 3) / (left + right), rtol=1e-6)
    assert (target[0, :, :4] == 1).all() and (target[0, :, 8:] == 3).all()


@pytest.mark.parametrize("blended", [False, True], ids=["paste", "blend"])
@pytest.mark.parametrize("dense", [False, True], ids=["lazy", "dense"])
def test_the_merged_map_at_any_pixels_equals_the_whole_map(blended, dense):
    shape = (70, 90)
    full_base, base = coarse_base(shape)
    merger = WindowMerger(base, shape, blended=blended, dense=dense)
    rng = np.random.default_rng(1)
    for side, count in ((16, 5), (24, 3)):  # two adds with two window sizes
        windows = random_windows(rng, shape, side, count)
        merger.add(windows, rng.random((2, count, side, side), dtype=np.float32))
    full = merger.full()
    assert full.shape == (2,) + shape and len(merger.windows) == 8
    assert not np.array_equal(full, full_base)
    for rows, cols in ((np.arange(10, 50), np.arange(5, 80)),         # a region
                       (np.arange(0, 70, 3), np.arange(1, 90, 7)),     # strided
                       (np.array([0, 1, 2, 40, 69]), np.array([89])),  # scattered
                       (np.arange(70), np.arange(90))):
        np.testing.assert_array_equal(merger.at(rows, cols), full[:, rows][:, :, cols])
    np.testing.assert_array_equal(merger.rows(20, 33), full[:, 20:33])


def test_a_dense_merger_keeps_its_map_until_the_next_add():
    merger = WindowMerger(zeros_base(), (10, 10), dense=True)
    merger.add(np.empty((0, 4), np.int64), np.empty((1, 0, 2, 2), np.float32))
    assert merger.chunks == [] and merger.windows.shape == (0, 4)
    first = merger.full()
    assert merger.full() is first
    merger.add(np.array([[0, 0, 2, 2]]), np.ones((1, 1, 2, 2), np.float32))
    again = merger.full()
    assert again is not first and again[0, :2, :2].sum() == 4 and first.sum() == 0
    lazy = WindowMerger(zeros_base(), (10, 10))
    assert lazy.full() is not lazy.full()  # evaluated on every call, never kept
