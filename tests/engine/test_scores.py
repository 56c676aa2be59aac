"""Window scores on hand-built probability maps. One convention: higher = refine first.
'mean' = 1 - 2 |mean(p) - 0.5|; 'uncertainty' = mean of 1 - 2 |p - 0.5| (binary) or of 1 - margin (K > 2)."""
import numpy as np
import pytest

from iterseg.engine.scores import SCORES, default_score, score_plane, window_scores


def tiled_map(window_means, size):
    """A (1, rows*size, cols*size) map whose windows of side ``size`` have exactly the given means."""
    return np.kron(np.asarray(window_means, np.float32), np.ones((size, size), np.float32))[None]


def scores_of(probs, size, score, stride=None, strip_rows=512):
    return window_scores(lambda top, bottom: probs[:, top:bottom], probs.shape[1:], size, stride or size, score,
                         strip_rows)


def test_mean_score_flips_the_papers_distance_from_one_half():
    means = np.array([[0.0, 0.9, 0.45, 1.0],
                      [0.55, 0.2, 0.5, 0.7],
                      [1.0, 0.6, 0.3, 0.05]])
    scores = scores_of(tiled_map(means, 8), 8, "mean")
    assert scores.shape == (3, 4) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, 1 - 2 * np.abs(means - 0.5), atol=1e-6)
    assert scores[1, 2] == pytest.approx(1.0) and scores[0, 0] == scores[0, 3] == 0


def test_scores_are_taken_on_probabilities_not_their_distance_from_zero():
    # On logits the least certain window would be the one nearest 0; on probabilities it is p = 0.5.
    scores = scores_of(tiled_map([[0.01, 0.5, 0.99]], 4), 4, "mean")
    assert scores.argmax() == 1 and scores[0, 0] == pytest.approx(scores[0, 2])


def test_uncertainty_prefers_uncertain_pixels_over_a_half_and_half_mean():
    # window 0: half 0, half 1 (mean 0.5 but every pixel certain); window 1: all 0.4
    prob = np.zeros((1, 4, 8), np.float32)
    prob[0, :2, :4] = 1.0
    prob[0, :, 4:] = 0.4
    np.testing.assert_allclose(scores_of(prob, 4, "mean"), [[1.0, 0.8]], atol=1e-6)
    np.testing.assert_allclose(scores_of(prob, 4, "uncertainty"), [[0.0, 0.8]], atol=1e-6)


def test_uncertainty_of_several_classes_is_one_minus_the_margin():
    probs = np.zeros((3, 4, 12), np.float32)
    probs[0] = 1.0
    probs[:, :, 4:8] = [[[0.4]], [[0.35]], [[0.25]]]
    np.testing.assert_allclose(score_plane(probs, "uncertainty")[0], [0] * 4 + [0.95] * 4 + [0] * 4, atol=1e-6)
    np.testing.assert_allclose(scores_of(probs, 4, "uncertainty"), [[0.0, 0.95, 0.0]], atol=1e-6)
    tie = np.full((2, 3, 3), 0.5, np.float32)
    assert (score_plane(tie, "uncertainty") == 1).all()


def test_overlapping_windows_and_strips_give_the_scores_of_the_whole_map():
    probs = np.random.default_rng(0).random((1, 70, 50), dtype=np.float32)
    for score in SCORES:
        whole = scores_of(probs, 16, score, stride=5)
        assert whole.shape == (len(range(0, 55, 5)) + 1, len(range(0, 35, 5)) + 1)
        np.testing.assert_array_equal(scores_of(probs, 16, score, stride=5, strip_rows=7), whole)
        window = probs[0, 5:21, 10:26]
        expected = 1 - 2 * abs(window.astype(np.float64).mean() - 0.5) if score == "mean" else (
            1 - 2 * np.abs(window.astype(np.float64) - 0.5)).mean()
        assert whole[1, 2] == pytest.approx(expected, abs=1e-6)


def test_the_default_score_follows_the_number_of_outputs():
    assert SCORES == ("mean", "uncertainty")
    assert default_score(1) == "mean" and default_score(3) == "uncertainty" and default_score(19) == "uncertainty"
