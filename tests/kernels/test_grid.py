"""Where the windows of a grid start: equal windows covering every pixel, the last shifted inside."""
import numpy as np
import pytest

from iterseg.kernels import grid_starts, grid_windows


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




def test_strided_grid_windows_are_row_major_and_shifted_inside_at_the_border():
    windows = grid_windows(10, 7, 4, stride=3)
    assert windows[:, :2].tolist() == [[y, x] for y in (0, 3, 6) for x in (0, 3)]
    assert (windows[:, 2:] == 4).all() and windows.dtype == np.int64
    assert grid_windows(3, 20, 8).tolist() == [[0, 0, 3, 8], [0, 8, 3, 8], [0, 12, 3, 8]]  # clipped to the axis


@pytest.mark.parametrize("size, stride, length, words", [
    (0, None, 5, "window size"), (2.5, None, 5, "window size"), (True, None, 5, "window size"),
    (4, 0, 5, "stride"), (4, 1.5, 5, "stride"), (4, None, 0, "axis length")])
def test_bad_geometry_is_refused(size, stride, length, words):
    with pytest.raises(ValueError, match=words):
        grid_starts(length, size, stride)
