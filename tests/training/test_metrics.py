"""Metrics against hand-computed values: binary (Dice, IoU, boundary F1) and per class (IoU, mIoU)."""
import numpy as np
import pytest

from iterseg.training.metrics import boundary, boundary_f1, class_counts, class_ious, dice, iou, mean_iou, scores


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


def test_class_iou_and_mean_by_hand():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 2], [2, 2, 2]])
    ious = class_ious(pred, target, 4)
    # class 0: I=1, U=2; class 1: I=1, U=2; class 2: I=2, U=4; class 3 absent
    np.testing.assert_allclose(ious[:3], [0.5, 0.5, 0.5])
    assert np.isnan(ious[3]) and mean_iou(ious) == pytest.approx(0.5)
    valid = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(class_ious(pred, target, 4, valid)[:3], [0.5, 1.0, 2 / 3])


def test_class_counts_sum_over_a_dataset():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 2], [2, 2, 2]])
    both, union = class_counts(pred, target, 4)
    assert both.tolist() == [1, 1, 2, 0] and union.tolist() == [2, 2, 4, 0]
    assert both.dtype == np.int64 and mean_iou([np.nan, np.nan]) == 1.0


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        class_counts(np.zeros((2, 2)), np.zeros((3, 2)), 2)
