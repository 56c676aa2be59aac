"""Streaming two-stage segmentation of tiled TIFFs against the in-memory pipeline."""
import tracemalloc

import numpy as np
import pytest
import tifffile

import iterseg
from iterseg.infer import context_boxes
from iterseg.stream import linear_taps, overview, write_mask_tiff, write_probs_tiff

from synthetic import blob_image, write_tiled


def full_probs(result):
    height, width = result.shape
    return result.probs_at(np.arange(height), np.arange(width))


@pytest.mark.parametrize("shape, tile, patch_size", [((203, 317), (64, 64), 48), ((256, 192), (32, 64), 32)])
def test_streaming_without_pyramid_equals_in_memory(tmp_path, bundle, shape, tile, patch_size):
    picture = blob_image(*shape, seed=5)
    path = write_tiled(tmp_path / "t.tif", picture, tile=tile)
    ref = iterseg.two_stage(picture, bundle, patches=5, patch_size=patch_size)
    got = iterseg.two_stage_tiled(path, bundle, patches=5, patch_size=patch_size)
    np.testing.assert_array_equal(got.windows, ref.windows)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)
    probs = full_probs(got)[0]
    np.testing.assert_allclose(probs, ref.probs, atol=1e-5)
    decided = np.abs(ref.probs - 0.5) > 1e-5
    np.testing.assert_array_equal(got.mask_at(np.arange(shape[0]), np.arange(shape[1]))[decided], ref.mask[decided])
    assert got.macs == ref.macs and "strips" in got.notes[0]


def test_streaming_with_context_and_uncertainty_score(tmp_path, bundle):
    picture = blob_image(200, 160, seed=6)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(32, 32))
    ref = iterseg.two_stage(picture, bundle, patches=4, patch_size=32, context=12, score="uncertainty")
    got = iterseg.two_stage_tiled(path, bundle, patches=4, patch_size=32, context=12, score="uncertainty")
    # uncertainty is taken at stage-1 scale when streaming: windows may differ, so refine the same ones
    same = iterseg.two_stage(picture, bundle, windows=got.windows, context=12)
    np.testing.assert_allclose(full_probs(got)[0], same.probs, atol=1e-5)
    assert any("approximation" in note for note in got.notes)
    assert len(set(map(tuple, got.windows)) & set(map(tuple, ref.windows))) >= 2


def test_streaming_with_a_pyramid_stays_close(tmp_path, bundle):
    picture = blob_image(512, 384, seed=7)
    path = write_tiled(tmp_path / "p.tif", picture, tile=(64, 64), pyramid=True)
    ref = iterseg.two_stage(picture, bundle, patches=6, patch_size=64)
    got = iterseg.two_stage_tiled(path, bundle, patches=6, patch_size=64)
    assert "pyramid level 3" in got.notes[0]
    # levels halved three times (uint8 each time) instead of one 1/8 INTER_AREA: stage 1 sees almost
    # the same pixels, so the stage-1 map differs by little and most windows agree
    s1_ref = iterseg.two_stage(picture, bundle, patches=0).probs
    s1_got = full_probs(iterseg.two_stage_tiled(path, bundle, patches=0))[0]
    assert np.abs(s1_got - s1_ref).max() < 0.02
    assert len(set(map(tuple, got.windows)) & set(map(tuple, ref.windows))) >= 5
    agree = (got.mask_at(np.arange(512), np.arange(384)) == ref.mask).mean()
    assert agree > 0.99


def test_only_the_tiles_of_the_selected_windows_are_read_at_level_0(tmp_path, bundle):
    picture = blob_image(512, 512, seed=8)
    path = write_tiled(tmp_path / "p.tif", picture, tile=(32, 32), pyramid=True)
    got = iterseg.two_stage_tiled(path, bundle, patches=3, patch_size=48)
    boxes, _ = context_boxes(got.windows, 0, bundle.s2.config.size_multiple, (512, 512))
    tiles = {(ty, tx) for y, x, h, w in boxes for ty in range(y // 32, (y + h - 1) // 32 + 1)
             for tx in range(x // 32, (x + w - 1) // 32 + 1)}
    assert got.tiles_read == len(tiles) < (512 // 32) ** 2 // 10


def test_memory_stays_bounded(tmp_path, bundle):
    """Without a pyramid the stage-1 view is built from strips: numpy never holds the image, and
    memory grows with the width (one strip), not the height."""
    picture = blob_image(4096, 768, seed=9)
    path = write_tiled(tmp_path / "big.tif", picture, tile=(256, 256))
    full_float = picture.size * 4
    del picture
    tracemalloc.start()
    try:
        result = iterseg.two_stage_tiled(path, bundle, patches=8, patch_size=128)
        write_mask_tiff(result, tmp_path / "mask.tif")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * full_float, f"peak {peak / 2**20:.0f} MB for a {full_float / 2**20:.0f} MB float image"


def test_written_outputs_equal_the_result(tmp_path, bundle):
    picture = blob_image(600, 400, seed=10)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(64, 64))
    result = iterseg.two_stage_tiled(path, bundle, patches=4, patch_size=48)
    fraction = write_mask_tiff(result, tmp_path / "m.tif")
    write_probs_tiff(result, tmp_path / "p.tif")
    mask = result.mask_at(np.arange(600), np.arange(400))
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.pages[0].is_tiled and [lvl.shape for lvl in tif.series[0].levels][:2] == [(600, 400), (300, 200)]
        np.testing.assert_array_equal(tif.asarray(), mask * 255)
        np.testing.assert_array_equal(tif.series[0].levels[1].asarray(), mask[1::2, 1::2] * 255)
    # region-by-region matrix products round differently from the whole-image one (BLAS blocking)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "p.tif"), full_probs(result)[0], rtol=0, atol=1e-6)
    assert fraction == pytest.approx(mask.mean())
    image, small_mask, windows = overview(result)
    assert image.shape[:2] == small_mask.shape == result.probs_small.shape[1:] and windows.shape == (4, 4)


def test_linear_taps_match_opencv():
    import cv2
    small = np.random.default_rng(0).random((7, 1), dtype=np.float32)
    for full in (7, 19, 56, 3):
        expected = cv2.resize(small, (1, full), interpolation=cv2.INTER_LINEAR)[:, 0]
        i0, i1, frac = linear_taps(np.arange(full), 7, full)
        np.testing.assert_allclose(small[i0, 0] * (1 - frac) + small[i1, 0] * frac, expected, atol=1e-6)


def test_the_segmenter_streams_with_its_precision(tmp_path, bundle):
    path = write_tiled(tmp_path / "t.tif", blob_image(128, 128, seed=11), tile=(64, 64))
    seg = iterseg.Segmenter(bundle, precision="bf16")
    result = seg.predict_tiled(path, patches=2)
    assert result.options["precision"] == "bf16" and result.options["streamed"]
    with pytest.raises(iterseg.InputError, match="patches"):
        seg.predict_tiled(path, patches=-1)


@pytest.mark.parametrize("options", [{"budget": 0.2}, {"threshold": 0.3}, {"threshold": 0.4, "patches": 3},
                                     {"budget_gmacs": 0.001}])
def test_budget_and_threshold_stream_like_in_memory(tmp_path, bundle, options):
    picture = blob_image(160, 200, seed=13)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(64, 64))
    ref = iterseg.two_stage(picture, bundle, patch_size=16, **options)
    got = iterseg.two_stage_tiled(path, bundle, patch_size=16, **options)
    np.testing.assert_array_equal(got.windows, ref.windows)
    assert got.macs["total"] == ref.macs["total"] and got.notes[-1] == ref.notes[-1]
    np.testing.assert_allclose(full_probs(got)[0], ref.probs, atol=1e-5)
