"""Stage 2 on the selected windows: what S2 is fed (the image crop, and for a conditioned S2 the
stage-1 probabilities of its window, checked by hand), batches, the baseline a conditioned S2 is
compared with and its file format. (Streamed conditioned runs: test_loop.py; training a conditioned
S2: tests/cli/test_train.py.)"""
import numpy as np
import torch

import iterseg
from iterseg.engine.coarse import stage1
from iterseg.engine.cost import count_macs, stage1_size
from iterseg.engine.refine import Stage2, refine, s2_input, s2_reader
from iterseg.engine.source import ArraySource
from iterseg.model.store import read_bundle, save_bundle

from synthetic import blob_image, conditioned_bundle


def test_stage2_windows_match_the_network_on_the_crop(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=3, patch_size=32, precision="fp32")
    assert len(result.windows) == 3
    for y, x, h, w in result.windows:
        crop = (image[y:y + h, x:x + w].astype(np.float32) / 255 - np.float32(bundle.mean)) / np.float32(bundle.std)
        with torch.inference_mode():
            expected = torch.sigmoid(bundle.s2(torch.from_numpy(crop.transpose(2, 0, 1).copy())[None]))[0, 0]
        np.testing.assert_allclose(result.probs[y:y + h, x:x + w], expected.numpy(), atol=1e-6)


def test_the_batch_size_does_not_change_the_result(bundle, image):
    one = iterseg.two_stage(image, bundle, patches=7, patch_size=16, batch_size=1)
    many = iterseg.two_stage(image, bundle, patches=7, patch_size=16, batch_size=64)
    assert one.options["batch_size"] == 1 and many.options["batch_size"] == 64
    np.testing.assert_allclose(one.probs, many.probs, atol=1e-6)
    np.testing.assert_array_equal(one.windows, many.windows)
    np.testing.assert_array_equal(one.mask, many.mask)


def test_refine_returns_window_probabilities_and_the_input_boxes(bundle, image):
    source = ArraySource(image, 3)
    windows = np.array([[0, 0, 30, 30], [60, 90, 30, 30]])
    probs, boxes = refine(Stage2(bundle.s2, bundle, source, None, context=5, batch_size=1), windows)
    assert probs.shape == (1, 2, 30, 30) and probs.dtype == np.float32
    # side: 30 + 2 * 5 of context + 3 for the start on the grid of 4, up to 44; both boxes inside the image
    assert boxes.tolist() == [[0, 0, 44, 44], [52, 84, 44, 44]]


def test_s2_input_appends_the_coarse_map_as_channels():
    crops = np.zeros((2, 4, 4, 3), np.float32)
    assert s2_input(crops) is crops
    both = s2_input(crops, np.ones((2, 4, 4, 1), np.float64))
    assert both.shape == (2, 4, 4, 4) and both.dtype == np.float32 and (both[..., 3] == 1).all()
    bundle, _ = conditioned_bundle()
    source = ArraySource(blob_image(16, 16), 3)
    assert s2_reader(source, None, conditioned=False) == source.read_boxes
    coarse = stage1(source, bundle.s1, bundle.s1_scale, bundle.mean, bundle.std)[0]
    boxes = np.array([[2, 3, 8, 8], [-2, 12, 8, 8]])  # the second one mirrored past two edges
    fed = s2_reader(source, coarse, conditioned=True)(boxes)
    np.testing.assert_array_equal(fed[..., :3], source.read_boxes(boxes))
    np.testing.assert_array_equal(fed[..., 3:], coarse.at_boxes(boxes))
    np.testing.assert_allclose(fed[0, :, :, 3], coarse.full()[0, 2:10, 3:11], atol=1e-6)


def test_s2_is_fed_the_image_and_the_stage1_probabilities():
    bundle, _ = conditioned_bundle()
    image = blob_image(64, 96, seed=3)
    window = np.array([[16, 32, 32, 32]])
    result = iterseg.two_stage(image, bundle, windows=window, precision="fp32")  # exact: the reference
    s1_only = iterseg.two_stage(image, bundle, patches=0, precision="fp32")
    pixels = image.astype(np.float32) / 255
    crop = (pixels[16:48, 32:64] - np.float32(bundle.mean)) / np.float32(bundle.std)
    condition = (s1_only.probs[16:48, 32:64, None] - 0.5) / 0.5
    x = torch.from_numpy(np.concatenate([crop, condition], axis=2).transpose(2, 0, 1)[None].copy())
    with torch.inference_mode():
        expected = torch.sigmoid(bundle.s2(x))[0, 0].numpy()
    np.testing.assert_allclose(result.probs[16:48, 32:64], expected, atol=1e-6)
    outside = np.ones(result.probs.shape, bool)
    outside[16:48, 32:64] = False
    np.testing.assert_array_equal(result.probs[outside], s1_only.probs[outside])


def test_baseline_runs_the_reference_network_and_counts_its_macs():
    bundle, plain = conditioned_bundle()
    image = blob_image(64, 96, seed=4)
    assert bundle.baseline_kind == "reference"
    ours, theirs = iterseg.baseline(image, bundle), iterseg.baseline(image, plain)
    np.testing.assert_array_equal(ours.probs, theirs.probs)
    assert ours.macs["baseline"] == theirs.macs["baseline"] == count_macs(plain.s2.config, 64, 96)
    two = iterseg.two_stage(image, bundle, patches=4)
    assert two.macs["baseline"] == ours.macs["baseline"]
    assert two.macs["stage2"] == 4 * count_macs(bundle.s2.config, *two.options["s2_input"])


def test_without_a_reference_the_baseline_is_stage1_plus_the_conditioned_s2():
    bundle, _ = conditioned_bundle(with_reference=False)
    image = blob_image(64, 96, seed=4)
    assert bundle.baseline_kind == "s1+s2"
    result = iterseg.baseline(image, bundle)
    s1_macs = count_macs(bundle.s1.config, *stage1_size((64, 96), bundle.s1_scale))
    assert result.macs["stage1"] == s1_macs
    assert result.macs["total"] == result.macs["baseline"] == s1_macs + count_macs(bundle.s2.config, 64, 96)
    # refining every window of the grid with the whole image as context reproduces it
    everything = iterseg.two_stage(image, bundle, windows=np.array([[0, 0, 64, 96]]))
    np.testing.assert_allclose(result.probs, everything.probs, atol=1e-6)


def test_conditioned_bundle_round_trips_with_its_reference(tmp_path):
    bundle, _ = conditioned_bundle()
    save_bundle(bundle, tmp_path / "c.pt", half=False)
    again = read_bundle(tmp_path / "c.pt")
    assert again.conditioned and again.baseline_kind == "reference"
    image = blob_image(48, 48, seed=6)
    np.testing.assert_array_equal(iterseg.two_stage(image, again, patches=3).probs,
                                  iterseg.two_stage(image, bundle, patches=3).probs)
    np.testing.assert_array_equal(iterseg.baseline(image, again).probs, iterseg.baseline(image, bundle).probs)


def test_a_run_hands_its_refiner_one_stage2_and_the_windows(bundle, image):
    """A Refiner (engine/refine.py) gets the run's Stage2 and each round's windows; one that wraps
    ``refine`` changes nothing."""
    seen = []

    def counting(stage2, windows, progress=None):
        seen.append((stage2, len(windows)))
        return refine(stage2, windows, progress)

    options = {"patches": 4, "rounds": 2, "context": 3, "batch_size": 2}
    result = iterseg.two_stage(image, bundle, refiner=counting, **options)
    assert [count for _, count in seen] == [2, 2] and seen[0][0] is seen[1][0]
    assert seen[0][0].context == 3 and seen[0][0].batch_size == 2 and seen[0][0].source.shape == image.shape[:2]
    np.testing.assert_array_equal(result.probs, iterseg.two_stage(image, bundle, **options).probs)
