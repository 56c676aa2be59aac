"""Segmentation quality of a mask against the ground truth, optionally inside a field of view.

Glossary
    pred, target   bool (H, W) foreground (binary metrics) or integer (H, W) class ids (multi-class)
    valid          bool (H, W) pixels that count (the field of view), or None for all
Conventions: when prediction and target are both empty (inside ``valid``), Dice, IoU and boundary
F1 are 1 (nothing to find, nothing found); when exactly one is empty they are 0.
"""
import cv2
import numpy as np

BOUNDARY_TOLERANCE = 2  # pixels: a boundary pixel within this distance of the other boundary matches


def _counts(pred, target, valid):
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape.")
    if valid is not None:
        pred, target = pred & valid, target & valid
    tp = np.count_nonzero(pred & target)
    return tp, np.count_nonzero(pred) - tp, np.count_nonzero(target) - tp


def dice(pred, target, valid=None):
    """2 |P & T| / (|P| + |T|)."""
    tp, fp, fn = _counts(pred, target, valid)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def iou(pred, target, valid=None):
    """|P & T| / |P | T|."""
    tp, fp, fn = _counts(pred, target, valid)
    return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)


def boundary(mask):
    """bool (H, W): foreground pixels with a background 4-neighbour (or on the image edge)."""
    mask = np.asarray(mask, np.uint8)
    eroded = cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (mask > 0) & (eroded == 0)


def _near(edge, other, tolerance):
    """Fraction of ``edge`` pixels within ``tolerance`` of a pixel of ``other``."""
    if not other.any():
        return 0.0
    distance = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 5)
    return float(np.count_nonzero(distance[edge] <= tolerance)) / np.count_nonzero(edge)


def boundary_f1(pred, target, valid=None, tolerance=BOUNDARY_TOLERANCE):
    """Boundary F1 (Csurka et al. 2013): F1 of boundary precision and recall at ``tolerance`` pixels."""
    pred_edge, target_edge = boundary(pred), boundary(target)
    if valid is not None:
        pred_edge, target_edge = pred_edge & valid, target_edge & valid
    if not pred_edge.any() and not target_edge.any():
        return 1.0
    if not pred_edge.any() or not target_edge.any():
        return 0.0
    precision = _near(pred_edge, target_edge, tolerance)
    recall = _near(target_edge, pred_edge, tolerance)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def scores(pred, target, valid=None):
    """{"dice", "iou", "boundary_f1"} of one image."""
    return {"dice": dice(pred, target, valid), "iou": iou(pred, target, valid),
            "boundary_f1": boundary_f1(pred, target, valid)}


def class_counts(pred, target, num_classes, valid=None):
    """(intersection, union) int64 (K,) per class id, over ``valid`` pixels: sum these over a
    dataset for dataset-level IoU (as Cityscapes and PASCAL VOC report it)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape.")
    if valid is not None:
        pred, target = pred[valid], target[valid]
    pred, target = pred.ravel().astype(np.int64), target.ravel().astype(np.int64)
    both = np.bincount(pred[pred == target], minlength=num_classes)[:num_classes]
    union = (np.bincount(pred, minlength=num_classes)[:num_classes]
             + np.bincount(target, minlength=num_classes)[:num_classes] - both)
    return both, union


def class_ious(pred, target, num_classes, valid=None):
    """float64 (K,) IoU per class id; NaN for a class absent from both prediction and target."""
    both, union = class_counts(pred, target, num_classes, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, both / np.maximum(union, 1), np.nan)


def mean_iou(ious):
    """Mean over the classes that occur (NaN entries skipped); 1.0 when none does."""
    ious = np.asarray(ious, dtype=np.float64)
    present = ious[~np.isnan(ious)]
    return float(present.mean()) if len(present) else 1.0
