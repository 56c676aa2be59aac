"""Warnings that are not errors: an input unlike the model's training data, and a refinement that
costs more than the baseline (notes in Result.notes, log warnings)."""
from types import SimpleNamespace

import numpy as np
import pytest

import iterseg
from iterseg.engine.checks import (
    FOREGROUND_BOUND,
    MEAN_BOUND,
    cost_notes,
    foreground_fraction,
    input_notes,
    warnings_in,
)

from synthetic import SHARED_DATA, blob_image, needs_data


def fake_bundle():
    return SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.1, 0.1, 0.1), untrained=False, name="fake",
                           provenance={"dataset": "fakes"}, class_names=("background", "lesion"))


def test_an_image_near_the_training_statistics_gets_no_note():
    view = np.full((8, 8, 3), (0.5, 0.4, 0.3), np.float32) + np.float32(0.1 * (MEAN_BOUND - 0.1))
    assert input_notes(fake_bundle(), view, np.zeros((1, 8, 8), np.float32)) == []


def test_a_channel_mean_far_from_the_training_mean_is_noted():
    view = np.full((8, 8, 3), (0.5, 0.4, 0.3), np.float32)
    view[..., 2] += 0.1 * (MEAN_BOUND + 0.5)
    notes = input_notes(fake_bundle(), view, np.zeros((1, 8, 8), np.float32))
    assert len(notes) == 1 and notes[0].startswith("warning: the image looks unlike what model 'fake' was trained "
                                                   "on (fakes)")
    assert "3.0 std" in notes[0] and warnings_in(notes + ["a plain note"]) == [notes[0][len("warning: "):]]
    assert input_notes(SimpleNamespace(**{**vars(fake_bundle()), "provenance": {}}), view, np.zeros((1, 8, 8))) == []


def test_a_binary_model_marking_nearly_everything_foreground_is_noted():
    view = np.full((10, 10, 3), (0.5, 0.4, 0.3), np.float32)
    probs = np.full((1, 10, 10), 0.9, np.float32)
    probs.flat[:5] = 0.1  # 95 % foreground: at the bound, fine
    assert foreground_fraction(probs) == FOREGROUND_BOUND and input_notes(fake_bundle(), view, probs) == []
    probs.flat[4] = 0.9
    notes = input_notes(fake_bundle(), view, probs)
    assert len(notes) == 1 and "stage 1 marks 96.0 % of it as lesion" in notes[0]
    # multi-class models: the foreground share says nothing (street scenes are mostly not background)
    classes = np.eye(3, dtype=np.float32)[np.ones((10, 10), int)].transpose(2, 0, 1)  # all class 1
    assert input_notes(fake_bundle(), view, classes) == []


def test_a_refinement_dearer_than_the_baseline_is_noted(bundle, image):
    assert cost_notes({"baseline": 100, "ratio": 0.5}) == []
    windows = np.array([[0, 0, 64, 64], [32, 64, 64, 64], [0, 32, 64, 64], [32, 0, 64, 64]])
    result = iterseg.two_stage(image, bundle, windows=windows)
    assert result.macs["ratio"] > 1
    note = next(n for n in warnings_in(result.notes) if "of the full-resolution model's MACs" in n)
    assert f"{100 * result.macs['ratio']:.0f} %" in note and "--baseline" in note
    assert not any("MACs:" in n for n in iterseg.two_stage(image, bundle, patches=1, patch_size=32).notes)


def test_a_model_run_on_images_unlike_its_training_data_says_so():
    """The drive model (fundus, mean RGB 0.49 0.27 0.16) on a bright blue picture, and on one in its own
    colours."""
    seg = iterseg.load("drive", precision="fp32")
    blue = np.zeros((64, 64, 3), np.uint8) + np.array([120, 130, 230], np.uint8)
    assert any("looks unlike what model 'drive' was trained on" in n for n in seg.predict(blue, patches=0).notes)
    fundus_like = (blob_image(64, 64, seed=1) * np.array([1.0, 0.5, 0.3])).astype(np.uint8)
    assert not any("looks unlike" in n for n in seg.predict(fundus_like, patches=0).notes)


@pytest.mark.slow
@needs_data
def test_the_bounds_on_real_images():
    """Each model on test images of its own dataset: no note; ph2 on fundus photographs: a note."""
    from iterseg.disk.images import read_image
    own = {"ph2": [SHARED_DATA / "PH2" / "images" / f"{name}.jpg"  # IMD064: the test image furthest off (1.66 std)
                   for name in ("IMD002", "IMD064", "IMD219")],
           "drive": sorted((SHARED_DATA / "DRIVE" / "test" / "images").glob("*.tif"))[:2]}
    for name, paths in own.items():
        seg = iterseg.load(name, precision="fp32")
        for path in paths:
            assert not any("looks unlike" in n for n in seg.predict(read_image(path), patches=0).notes), path
    fundus = read_image(sorted((SHARED_DATA / "DRIVE" / "test" / "images").glob("*.tif"))[0])
    notes = iterseg.load("ph2", precision="fp32").predict(fundus, patches=0).notes
    assert any("looks unlike what model 'ph2' was trained on" in n and "stage 1 marks" in n for n in notes)
