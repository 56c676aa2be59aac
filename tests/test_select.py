"""Window selection on hand-built probability maps."""
import numpy as np
import pytest

from iterseg.kernels import grid_windows
from iterseg.select import default_patch_size, select_windows


def tiled_map(window_means, size):
    """A (1, rows*size, cols*size) map whose windows have exactly the given means."""
    return np.kron(np.asarray(window_means, np.float32), np.ones((size, size), np.float32))[None]


def test_selects_exactly_the_lowest_scoring_windows():
    means = np.array([[0.0, 0.9, 0.45, 1.0],
                      [0.55, 0.2, 0.5, 0.7],
                      [1.0, 0.6, 0.3, 0.05]])
    windows, scores = select_windows(tiled_map(means, 8), 4, 8)
    # |mean - 0.5|: 0.5 (1,2) -> 0; 0.45 (0,2), 0.55 (1,0) tie at 0.05 -> index order; 0.6 (2,1) -> 0.1
    assert windows.tolist() == [[8, 16, 8, 8], [0, 16, 8, 8], [8, 0, 8, 8], [16, 8, 8, 8]]
    np.testing.assert_allclose(scores, [0.0, 0.05, 0.05, 0.1], atol=1e-6)


def test_selection_uses_probabilities_not_their_distance_from_zero():
    # On logits the most uncertain window would be the one nearest 0; on probabilities it is p = 0.5.
    windows, _ = select_windows(tiled_map([[0.01, 0.5, 0.99]], 4), 1, 4)
    assert windows.tolist() == [[0, 4, 4, 4]]


def test_uncertainty_prefers_mixed_windows_over_a_half_and_half_mean():
    # Window 0: half 0, half 1 (mean 0.5 but every pixel certain); window 1: all 0.4.
    prob = np.zeros((1, 4, 8), np.float32)
    prob[0, :2, :4] = 1.0
    prob[0, :, 4:] = 0.4
    assert select_windows(prob, 1, 4, score="mean")[0].tolist() == [[0, 0, 4, 4]]
    windows, scores = select_windows(prob, 1, 4, score="uncertainty")
    assert windows.tolist() == [[0, 4, 4, 4]]
    assert scores[0] == pytest.approx(0.8)


def test_margin_for_multiclass_and_more_patches_than_windows():
    probs = np.zeros((3, 4, 12), np.float32)
    probs[0] = 1.0
    probs[:, :, 4:8] = [[[0.4]], [[0.35]], [[0.25]]]
    windows, scores = select_windows(probs, 10, 4, score="margin")
    assert windows[:, 1].tolist() == [4, 0, 8]
    np.testing.assert_allclose(scores, [0.05, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="binary"):
        select_windows(probs, 1, 4, score="mean")


def test_strided_grid_and_shifted_border_windows():
    windows = grid_windows(10, 7, 4, stride=3)
    assert {tuple(w[:2]) for w in windows} == {(y, x) for y in (0, 3, 6) for x in (0, 3)}
    assert (windows[:, 2:] == 4).all()


def test_default_patch_size():
    assert default_patch_size(2048, 2048, 16, 16) == 128
    assert default_patch_size(572, 765, 16, 16) == 48   # ceil(765 / 16) = 48
    assert default_patch_size(100, 30, 7, 16) == 16    # ceil(100 / 7) = 15 -> 16
