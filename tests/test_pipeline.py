"""The two-stage pipeline through the public API, with random-weight networks (no training needed).

The two identities of DESIGN.md: with S2 as the baseline network, refining every window (seen with
its receptive field as context) reproduces the baseline; refining none reproduces upsampled S1.
"""
import cv2
import numpy as np
import pytest
import torch

import iterseg
from iterseg.errors import InputError
from iterseg.infer import align_up

from synthetic import blob_image, small_bundle


def stage1_by_hand(bundle, image):
    """Upsampled S1 probabilities computed without the pipeline's helpers."""
    height, width = image.shape[:2]
    h1, w1 = round(height * bundle.s1_scale), round(width * bundle.s1_scale)
    small = cv2.resize(image.astype(np.float32) / 255, (w1, h1), interpolation=cv2.INTER_AREA)
    small = (small - np.float32(bundle.mean)) / np.float32(bundle.std)
    m = bundle.s1.config.size_multiple
    padded = np.pad(small, ((0, align_up(h1, m) - h1), (0, align_up(w1, m) - w1), (0, 0)), mode="reflect")
    with torch.inference_mode():
        logits = bundle.s1(torch.from_numpy(padded.transpose(2, 0, 1).copy())[None])
    prob = torch.sigmoid(logits)[0, 0, :h1, :w1].numpy()
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def test_no_patches_reproduces_upsampled_stage1(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=0)
    np.testing.assert_allclose(result.probs, stage1_by_hand(bundle, image), atol=1e-6)
    assert result.windows.shape == (0, 4) and result.macs["stage2"] == 0


@pytest.mark.parametrize("shape, patch_size", [((96, 128), 32), ((90, 77), 20), ((64, 64), 64)])
def test_refining_every_window_with_context_reproduces_baseline(bundle, shape, patch_size):
    image = blob_image(*shape, seed=3)
    radius = bundle.s2.config.receptive_radius
    base = iterseg.baseline(image, bundle)
    full = iterseg.two_stage(image, bundle, patches=10_000, patch_size=patch_size, context=radius)
    np.testing.assert_allclose(full.probs, base.probs, atol=1e-6)
    np.testing.assert_array_equal(full.mask[np.abs(base.probs - 0.5) > 1e-4],
                                  base.mask[np.abs(base.probs - 0.5) > 1e-4])


def test_only_the_selected_windows_change(bundle, image):
    s1 = iterseg.two_stage(image, bundle, patches=0)
    res = iterseg.two_stage(image, bundle, patches=5, patch_size=16)
    changed = np.zeros(image.shape[:2], bool)
    for y, x, h, w in res.windows:
        changed[y:y + h, x:x + w] = True
    np.testing.assert_array_equal(res.probs[~changed], s1.probs[~changed])
    assert res.windows.dtype == np.int64 and res.windows.shape == (5, 4)
    # the windows are the 5 least certain of the stage-1 map
    grid = iterseg.two_stage(image, bundle, patches=10_000, patch_size=16)
    assert res.windows.tolist() == grid.windows[:5].tolist()


def test_stage2_windows_match_the_network_on_the_crop(bundle, image):
    res = iterseg.two_stage(image, bundle, patches=3, patch_size=32)
    y, x, h, w = res.windows[0]
    crop = (image[y:y + h, x:x + w].astype(np.float32) / 255 - np.float32(bundle.mean)) / np.float32(bundle.std)
    with torch.inference_mode():
        expected = torch.sigmoid(bundle.s2(torch.from_numpy(crop.transpose(2, 0, 1).copy())[None]))[0, 0]
    np.testing.assert_allclose(res.probs[y:y + h, x:x + w], expected.numpy(), atol=1e-6)


def test_batch_size_does_not_change_the_result(bundle, image):
    one = iterseg.two_stage(image, bundle, patches=7, patch_size=16, batch_size=1)
    many = iterseg.two_stage(image, bundle, patches=7, patch_size=16, batch_size=64)
    np.testing.assert_allclose(one.probs, many.probs, atol=1e-6)
    np.testing.assert_array_equal(one.windows, many.windows)


def test_tiled_baseline_equals_untiled(bundle):
    image = blob_image(150, 170, seed=5)
    whole = iterseg.baseline(image, bundle, tile=None)
    tiled = iterseg.baseline(image, bundle, tile=48)
    np.testing.assert_allclose(tiled.probs, whole.probs, atol=1e-6)


def test_result_follows_the_contract(bundle, image):
    res = iterseg.Segmenter(bundle).predict(image, patches=4)
    assert res.probs.shape == res.mask.shape == image.shape[:2]
    assert res.probs.dtype == np.float32 and 0 <= res.probs.min() and res.probs.max() <= 1
    assert res.mask.dtype == np.uint8 and set(np.unique(res.mask)) <= {0, 1}
    assert set(res.macs) >= {"stage1", "stage2", "total", "baseline", "ratio"}
    assert all(isinstance(res.macs[k], int) for k in ("stage1", "stage2", "total", "baseline"))
    assert res.macs["total"] == res.macs["stage1"] + res.macs["stage2"]
    assert res.macs["ratio"] == pytest.approx(res.macs["total"] / res.macs["baseline"])
    assert set(res.seconds) == {"stage1", "select", "stage2", "merge", "total"}
    assert res.seconds["total"] >= res.seconds["stage1"] + res.seconds["stage2"]


@pytest.mark.parametrize("make, note", [
    (lambda im: im[:, :, 0], "grayscale"),
    (lambda im: np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]), "alpha"),
    (lambda im: im.astype(np.uint16) * 257, "uint16 image scaled by 1/65535"),
    (lambda im: im.astype(np.float32) / 255, None),
])
def test_image_kinds_give_the_same_segmentation(bundle, image, make, note):
    reference = iterseg.two_stage(image, bundle, patches=4)
    res = iterseg.two_stage(make(image), bundle, patches=4)
    tolerance = 1e-4 if note != "grayscale" else None
    if tolerance:
        np.testing.assert_allclose(res.probs, reference.probs, atol=tolerance)
    assert res.probs.shape == image.shape[:2]
    assert (note is None and not res.notes) or any(note in n for n in res.notes)


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 2), (5, 7)])
def test_tiny_and_thin_images(bundle, shape):
    res = iterseg.two_stage(blob_image(*shape, seed=2), bundle, patches=4)
    assert res.probs.shape == shape and len(res.windows) >= 1
    assert (res.windows[:, 0] + res.windows[:, 2] <= shape[0]).all()


def test_more_patches_than_windows_refines_all_and_says_so(bundle, image):
    res = iterseg.two_stage(image, bundle, patches=500, patch_size=32)
    assert len(res.windows) == 3 * 4 and any("only 12 windows" in n for n in res.notes)


def test_multiclass_bundle_uses_softmax_and_margin():
    bundle = small_bundle(out_channels=3)
    res = iterseg.two_stage(blob_image(64, 80), bundle, patches=3)
    assert res.probs.shape == (3, 64, 80)
    np.testing.assert_allclose(res.probs.sum(0), 1, atol=1e-5)
    assert res.options["score"] == "margin" and res.mask.max() <= 2


@pytest.mark.parametrize("options, message", [
    ({"patches": -1}, "patches"), ({"patches": 2.5}, "patches"), ({"patch_size": 0}, "patch_size"),
    ({"stride": -4}, "stride"), ({"batch_size": 0}, "batch_size"), ({"score": "entropy"}, "score"),
    ({"context": -1}, "context")])
def test_bad_options_raise_input_error(bundle, image, options, message):
    with pytest.raises(InputError, match=message):
        iterseg.two_stage(image, bundle, **{"patches": 4, **options})


def test_bad_images_raise_input_error(bundle):
    with pytest.raises(InputError, match="NaN"):
        iterseg.two_stage(np.full((8, 8), np.nan, np.float32), bundle)
    with pytest.raises(InputError, match="channels"):
        iterseg.two_stage(np.zeros((3, 20, 20), np.uint8), bundle)
    with pytest.raises(InputError, match="non-empty"):
        iterseg.two_stage(np.zeros((0, 5), np.uint8), bundle)


def test_load_and_predict_from_a_path(bundle_path, image_path):
    seg = iterseg.load(bundle_path)
    res = seg.predict(image_path, patches=4)
    base = seg.predict_baseline(image_path)
    assert res.mask.shape == base.mask.shape == (96, 128)
    assert base.macs["ratio"] == 1.0 and base.macs["total"] == base.macs["baseline"]


def test_explicit_windows_are_refined_instead_of_selected(bundle, image):
    chosen = iterseg.two_stage(image, bundle, patches=4, patch_size=16)
    given = iterseg.two_stage(image, bundle, windows=chosen.windows[::-1].copy())
    np.testing.assert_array_equal(given.windows, chosen.windows[::-1])
    np.testing.assert_array_equal(given.probs, chosen.probs)
    assert given.macs == chosen.macs and np.isnan(given.scores).all()


@pytest.mark.parametrize("windows, message", [
    (np.zeros((2, 3), np.int64), "shape"),
    (np.array([[0, 0, 16, 16], [0, 16, 32, 32]]), "same"),
    (np.array([[90, 0, 16, 16]]), "inside"),
    (np.array([[0.0, 0, 16, 16]]), "integer"),
])
def test_bad_explicit_windows_are_refused(bundle, image, windows, message):
    with pytest.raises(InputError, match=message):
        iterseg.two_stage(image, bundle, windows=windows)


def test_default_batch_size_caps_the_pixels_per_network_call(bundle, image):
    from iterseg.infer import auto_batch_size
    assert auto_batch_size(48, 48) == 16 and auto_batch_size(320, 320) == 5 and auto_batch_size(2048, 2048) == 1
    result = iterseg.two_stage(image, bundle, patches=4, patch_size=16)
    assert result.options["batch_size"] == 16
    explicit = iterseg.two_stage(image, bundle, patches=4, patch_size=16, batch_size=3)
    assert explicit.options["batch_size"] == 3
    np.testing.assert_array_equal(explicit.mask, result.mask)
