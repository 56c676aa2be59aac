"""Stage 1: the coarse map against a computation by hand, its upsampling at any pixels against
OpenCV's, and stage 1 in chunks against stage 1 whole."""
import cv2
import numpy as np
import pytest
import torch

from iterseg.disk.tiff import mirror_index
from iterseg.engine import coarse as coarse_module
from iterseg.engine.coarse import CoarseMap, linear_taps, s1_chunk, stage1
from iterseg.engine.cost import align_up, count_macs, stage1_size
from iterseg.engine.source import ArraySource

from synthetic import blob_image, small_bundle


def stage1_by_hand(bundle, image):
    """Upsampled stage-1 probabilities (H, W) computed without the engine's helpers."""
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


def run_stage1(bundle, image):
    return stage1(ArraySource(image, bundle.in_channels), bundle.s1, bundle.s1_scale, bundle.mean, bundle.std)


@pytest.mark.parametrize("shape", [(96, 128), (90, 77), (7, 300)])
def test_stage1_equals_a_computation_by_hand(bundle, shape):
    image = blob_image(*shape, seed=3)
    coarse, macs, view, notes = run_stage1(bundle, image)
    h1, w1 = stage1_size(shape, bundle.s1_scale)
    assert coarse.probs.shape == (1, h1, w1) and view.shape == (h1, w1, 3) and notes == []
    np.testing.assert_allclose(coarse.full()[0], stage1_by_hand(bundle, image), atol=1e-6)
    assert macs == count_macs(bundle.s1.config, h1, w1)


def test_linear_taps_match_opencv():
    small = np.random.default_rng(0).random((7, 1), dtype=np.float32)
    for full in (7, 19, 56, 3, 1):
        expected = cv2.resize(small, (1, full), interpolation=cv2.INTER_LINEAR)[:, 0]
        i0, i1, frac = linear_taps(np.arange(full), 7, full)
        np.testing.assert_allclose(small[i0, 0] * (1 - frac) + small[i1, 0] * frac, expected, atol=1e-6)


@pytest.mark.parametrize("classes, small, shape", [(1, (12, 16), (96, 128)), (3, (5, 9), (61, 143)),
                                                   (1, (1, 1), (8, 8)), (2, (6, 6), (6, 6))])
def test_the_map_at_any_pixels_equals_the_whole_map(classes, small, shape):
    rng = np.random.default_rng(classes)
    coarse = CoarseMap(rng.random((classes,) + small, dtype=np.float32), shape)
    full = coarse.full()
    assert full.shape == (classes,) + shape and full.dtype == np.float32
    rows = rng.integers(0, shape[0], 17)
    cols = rng.integers(0, shape[1], 23)  # any order, repeats allowed
    np.testing.assert_allclose(coarse.at(rows, cols), full[:, rows][:, :, cols], atol=1e-6)
    region = coarse.at(np.arange(2, shape[0] - 1), np.arange(1, shape[1]))
    np.testing.assert_allclose(region, full[:, 2:-1, 1:], atol=1e-6)


def test_boxes_past_the_edge_are_mirrored_like_the_pixels():
    coarse = CoarseMap(np.random.default_rng(2).random((2, 6, 8), dtype=np.float32), (48, 64))
    boxes = np.array([[-5, -3, 16, 20], [40, 50, 16, 20], [10, 10, 16, 20]])
    got = coarse.at_boxes(boxes)
    assert got.shape == (3, 16, 20, 2)
    full = coarse.full()
    for box, out in zip(boxes, got, strict=True):
        rows = mirror_index(box[0] + np.arange(16), 48)
        cols = mirror_index(box[1] + np.arange(20), 64)
        np.testing.assert_allclose(out, full[:, rows][:, :, cols].transpose(1, 2, 0), atol=1e-6)


def test_tile_sides():
    assert s1_chunk(1300, 1300) is None and s1_chunk(100, 16_000) is None and s1_chunk(100, 20_000) == 1000
    assert s1_chunk(2000, 1500) == 1000 and s1_chunk(3000, 1025) == 1000 and s1_chunk(1500, 1400) == 750
    assert s1_chunk(1168, 1752, width=8) is None  # an HRF image at 1/2 scale: a narrow stage 1 runs it whole
    assert s1_chunk(1168, 1752, width=16) == 876


def test_stage1_in_tiles_equals_stage1_whole(monkeypatch):
    bundle = small_bundle()
    image = blob_image(800, 600, seed=8)  # stage-1 view 100 x 75
    whole, whole_macs, _, whole_notes = run_stage1(bundle, image)
    monkeypatch.setattr(coarse_module, "S1_WHOLE_PIXELS", 30 * 30)
    monkeypatch.setattr(coarse_module, "S1_CHUNK", 40)
    assert s1_chunk(100, 75) == 38  # 3 x 2 chunks of at most 40 px
    tiled, tiled_macs, _, notes = run_stage1(bundle, image)
    np.testing.assert_allclose(tiled.probs, whole.probs, atol=1e-5)
    context = align_up(bundle.s1.config.receptive_radius, bundle.s1.config.size_multiple)
    assert whole_notes == []
    assert notes == [f"stage 1 ran in 6 chunks of 38 px with receptive-field context ({context} px)"]
    assert tiled_macs > whole_macs  # the context is paid for


def test_stage1_in_bands_of_chunks_equals_all_chunks_at_once():
    from iterseg.engine.coarse import run_in_bands
    from iterseg.engine.infer import run_whole
    from iterseg.engine.source import gather_boxes
    bundle = small_bundle()
    view = blob_image(100, 75, seed=8).astype(np.float32) / 255
    runner = bundle.runners("fp32", False)[0]
    args = (runner, lambda boxes: gather_boxes(view, boxes), (100, 75), bundle.mean, bundle.std)
    banded, count, box_hw = run_in_bands(*args, chunk=38)
    at_once, count_at_once, box_hw_at_once = run_whole(*args, chunk=38)
    np.testing.assert_array_equal(banded, at_once)
    assert (count, box_hw) == (count_at_once, box_hw_at_once) == (6, box_hw)
