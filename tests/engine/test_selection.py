"""Selection: how many windows (count, budget, threshold) and which (highest score first, ties to the
lowest index, never twice, overlap suppression), and the notes that say why."""
import math

import numpy as np
import pytest

from iterseg.engine.selection import (
    next_windows,
    overlap_fraction,
    selection_notes,
    suppress,
    window_limit,
)
from iterseg.engine.settings import Settings


def test_the_highest_scores_are_chosen_ties_to_the_lowest_index():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    chosen = next_windows(scores, np.zeros(6, bool), 4)
    assert chosen.tolist() == [1, 3, 2, 5]
    assert next_windows(scores, np.zeros(6, bool), 100).tolist() == [1, 3, 2, 5, 0, 4]


def test_windows_refined_before_are_never_chosen_again():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    refined = np.array([False, True, False, True, False, False])
    assert next_windows(scores, refined, 3).tolist() == [2, 5, 0]
    assert next_windows(scores, np.ones(6, bool), 3).tolist() == []


@pytest.mark.parametrize("threshold, expected", [(0.5, [1, 3]), (0.4, [1, 3, 2, 5]), (0.9, []),
                                                 (0.0, [1, 3, 2, 5, 0, 4])])
def test_a_threshold_keeps_the_windows_scoring_above_it(threshold, expected):
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    assert next_windows(scores, np.zeros(6, bool), math.inf, threshold).tolist() == expected
    assert next_windows(scores, np.zeros(6, bool), 1, threshold).tolist() == expected[:1]


def test_overlap_fraction_is_relative_to_the_window():
    window = np.array([0, 0, 10, 10])
    others = np.array([[0, 0, 10, 10], [5, 5, 10, 10], [0, 10, 10, 10], [-5, 0, 10, 10], [2, 2, 4, 4]])
    np.testing.assert_allclose(overlap_fraction(window, others), [1, 0.25, 0, 0.5, 0.16])


def test_suppression_walks_in_priority_order():
    grid = np.array([[0, 0, 10, 10], [0, 5, 10, 10], [0, 10, 10, 10], [0, 20, 10, 10]])
    assert suppress(grid, [1, 0, 2, 3], 3, 0.25, ()).tolist() == [1, 3]
    assert suppress(grid, [0, 1, 2, 3], 3, 0.5, ()).tolist() == [0, 1, 2]
    assert suppress(grid, [0, 1, 2, 3], 3, 0.25, [[0, 18, 10, 10]]).tolist() == [0, 2]  # kept earlier
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert next_windows(scores, np.zeros(4, bool), 3, None, grid, 0.25).tolist() == [0, 2, 3]


@pytest.mark.parametrize("patches, budget, expected", [
    (16, None, 16), (None, None, math.inf), (16, 1000 + 5 * 30, 5), (3, 1000 + 5 * 30, 3),
    (None, 1000 + 5 * 30 + 29, 5), (None, 900, 0), (0, None, 0)])
def test_window_limit(patches, budget, expected):
    assert window_limit(patches, budget, stage1_macs=1000, window_macs=30) == expected


def test_notes_say_why_as_many_windows_were_refined():
    assert selection_notes(Settings(patches=500), 12, 12, 500) == [
        "500 patches asked, the grid has only 12 windows: all refined"]
    assert selection_notes(Settings(patches=4), 4, 12, 4) == []
    assert selection_notes(Settings(threshold=0.3, score="mean"), 2, 12, math.inf) == [
        "2 windows refined in 1 round(s): the windows scoring above threshold 0.3 (mean)"]
    assert selection_notes(Settings(budget=0.2, patches=5, rounds=2), 5, 12, 5) == [
        "5 windows refined in 2 round(s): the cap of 5 patches"]
    assert selection_notes(Settings(budget=0.2), 3, 12, 3) == [
        "3 windows refined in 1 round(s): as many as the budget allows after stage 1 (3)"]
