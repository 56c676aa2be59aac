"""int8 calibration on data: each network calibrated on the inputs predict gives it (S1 on stage-1
views, S2 on seeded full-resolution crops, with the coarse map for a conditioned S2)."""
import numpy as np
import pytest
import torch

from iterseg.engine.source import ArraySource
from iterseg.training.calibrate import (
    CALIBRATION_CROP,
    calibrate_bundle,
    calibration_batches,
    calibration_images,
    crop_boxes,
    stage1_runs,
)
from iterseg.training.data import load_spec

from synthetic import blob_image, conditioned_bundle, small_bundle, write_dataset


def unit_images(count=2, shape=(100, 300)):
    return [ArraySource(blob_image(*shape, seed=s), 3).unit for s in range(count)]


def test_crop_boxes_are_seeded_and_inside_the_image():
    boxes = crop_boxes((100, 300), 4, np.random.default_rng(0), 5)
    assert boxes.shape == (5, 4) and (boxes[:, 2:] == 100).all()  # min(256, H, W) down to the multiple
    assert (boxes[:, 1] + boxes[:, 3] <= 300).all() and (boxes[:, 0] == 0).all()
    np.testing.assert_array_equal(boxes, crop_boxes((100, 300), 4, np.random.default_rng(0), 5))
    assert (crop_boxes((1000, 1000), 16, np.random.default_rng(0), 1)[:, 2:] == CALIBRATION_CROP).all()


def test_each_network_is_calibrated_on_what_predict_feeds_it():
    bundle = small_bundle()
    images = unit_images()
    runs = stage1_runs(bundle, images)
    s1 = calibration_batches(runs, bundle, bundle.s1)
    assert [tuple(x.shape) for x in s1] == [(1, 3, 12, 36)] * 2  # stage-1 views (13 x 38) cut to the multiple
    view = runs[0][2][:12, :36]
    torch.testing.assert_close(s1[0][0], torch.from_numpy(((view - 0.5) / 0.25).transpose(2, 0, 1).copy()))
    s2 = calibration_batches(runs, bundle, bundle.s2, crops_per_image=3)
    assert [tuple(x.shape) for x in s2] == [(3, 3, 100, 100)] * 2
    again = calibration_batches(runs, bundle, bundle.s2, crops_per_image=3)
    assert all(torch.equal(a, b) for a, b in zip(s2, again, strict=True))  # seeded


def test_a_conditioned_s2_is_calibrated_with_the_coarse_map():
    bundle, _ = conditioned_bundle()
    images = unit_images(1)
    runs = stage1_runs(bundle, images)
    (x,) = calibration_batches(runs, bundle, bundle.s2, crops_per_image=1)
    assert tuple(x.shape) == (1, 4, 100, 100)
    source, coarse, _ = runs[0]
    (box,) = crop_boxes(source.shape, 4, np.random.default_rng(0), 1)
    expected = (coarse.at_boxes(box[None])[0, :, :, 0] - 0.5) / 0.5
    np.testing.assert_allclose(x[0, 3].numpy(), expected, atol=1e-6)
    (reference,) = calibration_batches(runs, bundle, bundle.reference, crops_per_image=1)
    assert tuple(reference.shape) == (1, 3, 100, 100)


def test_calibration_images_are_seeded_training_images(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    images, ids = calibration_images(spec, 3, seed=1)
    assert len(images) == len(ids) == 3 and set(ids) <= {s.id for s in spec.split("train")}
    assert images[0].dtype == np.float32 and images[0].shape == (96, 128, 3) and images[0].max() <= 1
    assert calibration_images(spec, 3, seed=1)[1] == ids and len(calibration_images(spec, 99)[1]) == 6


@pytest.mark.slow
def test_calibrating_a_bundle_folds_batch_norm_and_records_every_range():
    bundle, _ = conditioned_bundle()
    int8 = calibrate_bundle(bundle, unit_images(2, (64, 64)), {"spec": "syn"})
    assert set(int8.int8_ranges) == {"s1", "s2", "reference"}
    assert all(net.config.norm == "none" for net in int8.networks().values())
    for ranges in int8.int8_ranges.values():
        assert ranges and all(low <= high for low, high in ranges)
    info = int8.provenance["int8"]
    assert info["images"] == 2 and info["spec"] == "syn" and "reduce_range" in info
    assert int8.class_names == bundle.class_names and int8.mean == bundle.mean and int8.conditioned
