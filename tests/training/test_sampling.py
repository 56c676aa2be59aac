"""What a training step sees: crop sides and pixels per batch, augmentation, mirrored crops, stage-1
views, and crop centres drawn where stage 1 is unsure."""
import numpy as np
import pytest

from iterseg.engine.coarse import stage1
from iterseg.engine.scores import score_plane
from iterseg.engine.source import ArraySource
from iterseg.training.data import load_spec
from iterseg.training.loop import TrainOptions, load_images
from iterseg.training.sampling import (
    S1_JITTER,
    CropSampler,
    augment,
    coarse_map,
    crop_at,
    resize_target,
    s1_views,
    uncertainty_weights,
)

from synthetic import bright_bundle, disc_pair, small_bundle, write_dataset

TINY = dict(epochs=2, steps_per_epoch=3, batch_size=2, width=4, depth=2, crop=32, crop_sizes=(16, 32), precision="fp32")


@pytest.fixture
def images(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    return spec, load_images(spec, spec.split("train"), 3)


def test_crop_sides_cover_the_requested_range_and_keep_the_pixels_per_batch(images):
    spec, loaded = images
    sampler = CropSampler(TrainOptions(stage="s2", **TINY), loaded, spec.augment)
    shapes = {sampler.batch(np.random.default_rng(seed))[0].shape for seed in range(12)}
    assert {s[1] for s in shapes} == {16, 32}
    assert all(s[0] * s[1] * s[2] == 2 * 32 * 32 for s in shapes)  # pixels per batch kept
    s1 = CropSampler(TrainOptions(stage="s1", s1_scale=0.125, **TINY), loaded, spec.augment)
    crops, targets = s1.batch(np.random.default_rng(0))
    assert crops.shape[1:] == (12, 12, 3) and targets.shape[1:] == (12, 12)  # 96 / 8 -> a multiple of 4


def test_batches_repeat_with_the_seed(images):
    spec, loaded = images
    sampler = CropSampler(TrainOptions(stage="s2", **TINY), loaded, spec.augment)
    first, again = sampler.batch(np.random.default_rng(7)), sampler.batch(np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_crop_centres_follow_the_weights(images):
    spec, loaded = images
    cell = np.zeros((4, 4))
    cell[3, 3] = 1  # all the mass on one cell of a 4 x 4 grid: the bottom-right one
    weights = [cell] * len(loaded)
    opts = TrainOptions(stage="s2", **{**TINY, "crop_sizes": (16,)})
    sampler = CropSampler(opts, loaded, {"hflip": False, "vflip": False, "rotate90": False}, weights)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = int(rng.integers(len(loaded)))
        y, x = sampler._centre(rng, index, loaded[index][0].shape, 16)
        assert 72 - 8 <= y + 8 <= 96 and 96 - 8 <= x + 8 <= 128  # centred in the last quarter, kept inside


def test_augmentation_moves_image_and_target_together_and_obeys_the_rules():
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    target = image[:, :, 0].copy()
    rng = np.random.default_rng(1)
    for _ in range(10):
        a, t = augment(image, target, rng, {})
        np.testing.assert_array_equal(a[:, :, 0], t)
    none = {"hflip": False, "vflip": False, "rotate90": False}
    a, t = augment(image, target, rng, none)
    assert a is image and t is target
    seen = {augment(image, target, np.random.default_rng(s), {"vflip": False, "rotate90": False})[1][0, 0]
            for s in range(20)}
    assert seen == {target[0, 0], target[0, -1]}  # only horizontal flips


def test_crops_larger_than_the_image_are_mirrored():
    array = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(crop_at(array, 0, 0, 5), np.pad(array, ((0, 2), (0, 1)), mode="reflect"))
    np.testing.assert_array_equal(crop_at(array, 1, 1, 2), array[1:3, 1:3])
    assert crop_at(np.ones((1, 3, 2)), 0, 0, 4).shape == (4, 4, 2)  # one row: repeated, not mirrored


def test_stage1_views_and_soft_targets(images):
    _, loaded = images
    views = s1_views(loaded[:2], 0.125)
    assert len(views) == 2 and len(views[0]) == len(S1_JITTER)
    assert [v[0].shape[:2] for v in views[0]] == [(12, 16), (12, 16), (13, 17)]  # 96 x 128 at 1/8 (+5 %)
    target = views[0][0][1]
    assert target.dtype == np.float32 and 0 <= target.min() and target.max() <= 1
    one_hot = np.eye(3, dtype=np.float32)[np.random.default_rng(0).integers(0, 3, (16, 16))]
    np.testing.assert_allclose(resize_target(one_hot, 4, 4).sum(axis=2), 1, atol=1e-6)


def test_the_coarse_map_is_the_engines_stage1(bundle):
    image, _ = disc_pair(96, 128, seed=1)
    unit = ArraySource(image, 3).unit
    ours = coarse_map(bundle.s1, unit, bundle.s1_scale, bundle.mean, bundle.std)
    engine = stage1(ArraySource(image, 3), bundle.s1, bundle.s1_scale, bundle.mean, bundle.std)[0]
    # the engine averages the stored uint8 values (kernels/area.py), training shrinks unit floats: equal up to rounding
    np.testing.assert_allclose(ours.probs, engine.probs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [bright_bundle, lambda: small_bundle(out_channels=3)], ids=["binary", "classes"])
def test_uncertainty_weights_are_the_uncertainty_score_plus_a_floor(make):
    bundle = make()
    loaded = [(ArraySource(disc_pair(96, 128, seed=s)[0], 3).unit, None, None) for s in range(2)]
    weights = uncertainty_weights(bundle.s1, loaded, bundle.mean, bundle.std, bundle.s1_scale, floor=0.05)
    for (image, _, _), w in zip(loaded, weights, strict=True):
        probs = coarse_map(bundle.s1, image, bundle.s1_scale, bundle.mean, bundle.std).probs
        expected = score_plane(probs, "uncertainty").astype(np.float64) + 0.05
        assert w.shape == (12, 16) and w.sum() == pytest.approx(1)
        np.testing.assert_allclose(w, expected / expected.sum())
