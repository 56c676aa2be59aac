"""Checks of a run's numbers: probabilities that are not finite are an error (``check_finite``); the
rest are warnings, not errors: an input that looks unlike the model's training data,
and a refinement that costs more than the baseline. Each check returns notes for Result.notes that
start with WARNING ('warning: '); the report keeps them, the CLI logs them as warnings and its summary
shows them. The library itself does not log them (Result.notes is the API's channel).

Glossary
    view     float32 (h1, w1, C) the stage-1 view of the image, values in [0, 1]
    coarse   engine/coarse.CoarseMap: stage-1 probabilities (K, h1, w1), never logits
    bundle   model/bundle.Bundle: ``mean`` / ``std`` are the per-channel statistics of its training
             pixels (in [0, 1]), the normalisation its networks were trained with
The bounds were measured (2026-12-02, stage 1 only, fp32) on the real test splits with each dataset's
own model (PH2 60 images, DRIVE 20, HRF 13) and with each model on 6 test images of each other dataset:
- largest channel-mean distance, in the bundle's std: own test images PH2 1.66 (IMD064, a dark one),
  DRIVE 0.70, HRF 1.25; fundus models on each other's images 0.62 (drive on HRF) and 1.13 (hrf on
  DRIVE); vessel models on dermoscopy images 2.63-4.75 (drive) and 5.64-9.42 (hrf). But ph2 on fundus
  photographs only 1.59-2.14, inside PH2's own spread: the mean alone cannot catch it. MEAN_BOUND = 2.5.
- stage-1 foreground share: own test images PH2 5.1-90.8 %, DRIVE 6.9-11.0 %, HRF 6.2-9.1 %; ph2 on
  fundus photographs 97.4-100 % (DRIVE) and 99.6-100 % (HRF). FOREGROUND_BOUND = 0.95 (binary models).
"""
import cv2
import numpy as np

from ..errors import InputError

MEAN_BOUND = 2.5
FOREGROUND_BOUND = 0.95
WARNING = "warning: "


def check_finite(probs, stage, bundle):
    """InputError if ``probs`` (probabilities, any shape) that ``stage`` of ``bundle``'s networks made
    hold NaN or infinity: such a map must never become a mask."""
    finite = np.isfinite(probs)
    if finite.all():
        return
    share = 100 * (1 - finite.mean())
    raise InputError(f"{stage} of model {bundle.name!r} gave NaN or infinite probabilities ({share:.3g} % of them) "
                     "on this image: check its values (iterseg maps them to [0, 1] by dtype) and the model's weights.")


def warnings_in(notes):
    """The notes that are warnings, without their prefix."""
    return [note[len(WARNING):] for note in notes if note.startswith(WARNING)]


def foreground_fraction(coarse_probs):
    """Share of stage-1 pixels (probabilities (K, h1, w1)) that are not class 0 (p >= 0.5 for binary)."""
    probs = np.asarray(coarse_probs)
    return float((probs[0] >= 0.5).mean() if len(probs) == 1 else (probs.argmax(axis=0) > 0).mean())


def channel_means(view):
    """float64 (C,) the mean of each channel of ``view`` float32 (h, w[, C]): OpenCV's for up to 4
    channels (a few ms for a stage-1 view, where NumPy's strided mean took 20-70 ms)."""
    channels = view.shape[2] if view.ndim == 3 else 1
    if channels <= 4:
        return np.array(cv2.mean(np.ascontiguousarray(view))[:channels])
    return view.reshape(-1, channels).mean(axis=0, dtype=np.float64)


def input_notes(bundle, view, coarse_probs):
    """[a warning] when the image (its stage-1 ``view``) looks unlike ``bundle``'s training data: a
    channel mean more than MEAN_BOUND of the bundle's std from the bundle's mean, or (binary models)
    stage 1 marking more than FOREGROUND_BOUND of the image as foreground; else []. Bundles without
    provenance (random weights, users' own networks) have no training data to compare with: []."""
    if view is None or getattr(bundle, "untrained", False) or not getattr(bundle, "provenance", None):
        return []
    view = np.asarray(view, np.float32)
    channels = view.shape[2] if view.ndim == 3 else 1
    mean, std = np.asarray(bundle.mean, np.float64), np.maximum(np.asarray(bundle.std, np.float64), 1e-6)
    if channels != len(mean):
        return []
    distance = np.abs(channel_means(view) - mean) / std
    fraction = foreground_fraction(coarse_probs)
    reasons = []
    if distance.max() > MEAN_BOUND:
        reasons.append(f"its channel means lie up to {distance.max():.1f} std from those of the training images "
                       f"(bound {MEAN_BOUND:g})")
    if len(np.asarray(coarse_probs)) == 1 and fraction > FOREGROUND_BOUND:
        name = getattr(bundle, "class_names", ("", "foreground"))[-1]
        reasons.append(f"stage 1 marks {100 * fraction:.1f} % of it as {name} (bound {100 * FOREGROUND_BOUND:g} %)")
    if not reasons:
        return []
    data = bundle.provenance.get("dataset", "its training data")
    note = (f"{WARNING}the image looks unlike what model {bundle.name!r} was trained on ({data}): "
            + "; ".join(reasons) + "; the mask may be meaningless: check the model (`iterseg models`)")
    return [note]


def cost_notes(macs):
    """[a warning] when the two-stage run cost more MACs than the full-resolution baseline; else []."""
    if not macs.get("baseline") or macs["ratio"] <= 1:
        return []
    return [f"{WARNING}the refinement cost {100 * macs['ratio']:.0f} % of the full-resolution model's MACs: fewer "
            "or smaller windows, or --baseline (predict_baseline), would cost less"]
