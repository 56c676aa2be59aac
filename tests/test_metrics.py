"""Metrics against hand-computed values."""
import numpy as np
import pytest

from iterseg.training.metrics import boundary, boundary_f1, dice, iou, scores


def square(size=20, top=5, side=6):
    mask = np.zeros((size, size), bool)
    mask[top:top + side, top:top + side] = True
    return mask


def test_hand_computed_overlap():
    pred = np.zeros((4, 4), bool)
    target = np.zeros((4, 4), bool)
    pred[0, :3] = True          # 3 pixels
    target[0, 1:] = True        # 3 pixels, 2 shared
    assert dice(pred, target) == pytest.approx(2 * 2 / 6)
    assert iou(pred, target) == pytest.approx(2 / 4)


def test_empty_full_and_one_pixel_masks():
    empty, full = np.zeros((5, 5), bool), np.ones((5, 5), bool)
    assert scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "boundary_f1": 1.0}
    assert scores(empty, full) == {"dice": 0.0, "iou": 0.0, "boundary_f1": 0.0}
    assert scores(full, full) == {"dice": 1.0, "iou": 1.0, "boundary_f1": 1.0}
    dot = empty.copy()
    dot[2, 2] = True
    assert dice(dot, dot) == 1.0 and boundary(dot).sum() == 1
    shifted = np.roll(dot, 1, axis=1)
    assert dice(dot, shifted) == 0.0 and boundary_f1(dot, shifted) == 1.0   # within 2 px
    assert boundary_f1(dot, np.roll(dot, 2, axis=0), tolerance=1) == 0.0


def test_field_of_view_excludes_pixels():
    pred, target = square(), square()
    pred[0, 0] = True
    valid = np.ones_like(pred)
    valid[0, 0] = False
    assert dice(pred, target) < 1 and dice(pred, target, valid) == 1.0


def test_boundary_f1_of_shifted_square():
    target = square()
    assert boundary_f1(np.roll(target, 1, axis=0), target) == 1.0
    far = np.roll(target, 5, axis=0)
    assert 0 < boundary_f1(far, target) < 0.6
    assert boundary(target).sum() == 4 * 6 - 4
