"""Writing results: atomically, in the formats promised (0/255 or palette PNG masks, float32 TIFF
probabilities, overlays), and a streamed result's pyramidal TIFFs written tile by tile."""
import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

import iterseg
from iterseg.disk.outputs import (
    atomic_output,
    display_rgb,
    level_positions,
    overlay,
    overview,
    write_json,
    write_mask,
    write_mask_pyramid,
    write_probs,
    write_probs_pyramid,
)

from synthetic import CLASS_COLOURS, blob_image, multiclass_bundle, write_tiled


def test_atomic_output_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_writers_round_trip(tmp_path):
    mask = np.zeros((6, 7), np.uint8)
    mask[2:4, 3:6] = 1
    write_mask(tmp_path / "m.png", mask)
    assert set(np.unique(cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED))) == {0, 255}
    probs = np.random.default_rng(0).random((2, 6, 7), dtype=np.float32)
    write_probs(tmp_path / "p.tif", probs)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), probs)
    write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text().startswith("{")
    assert not list(tmp_path.glob(".*"))


def test_overlay_draws_windows_and_tints_foreground():
    image = np.zeros((40, 40), np.uint16)
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 5:10] = 1
    rgb = overlay(image, mask, np.array([[20, 20, 16, 16]]))
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[20, 25]) == (255, 220, 0)       # window edge
    assert rgb[7, 7, 0] > 50 and rgb[30, 2].max() == 0


def test_a_multiclass_mask_is_a_palette_png_of_class_ids(tmp_path):
    ids = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    write_mask(tmp_path / "m.png", ids, CLASS_COLOURS)
    mask = Image.open(tmp_path / "m.png")
    assert mask.mode == "P"
    np.testing.assert_array_equal(np.asarray(mask), ids)
    assert np.asarray(mask.getpalette()[:12]).reshape(4, 3).tolist() == [list(c) for c in CLASS_COLOURS]


@pytest.mark.parametrize("image, expected", [
    (np.full((2, 2), 0x1234, np.uint16), 0x12),
    (np.full((2, 2, 3), 0.5, np.float32), 128),
    (np.full((2, 2, 2), np.nan, np.float32), 0),
    (np.full((2, 2, 4), 7, np.uint8), 7),
])
def test_display_rgb(image, expected):
    rgb = display_rgb(image)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and (rgb == expected).all()


def full_probs(result):
    height, width = result.shape
    return result.probs_at(np.arange(height), np.arange(width))


def test_pyramid_level_positions_sample_the_centre_of_each_block():
    assert level_positions(0, 3, 0).tolist() == [0, 1, 2]
    assert level_positions(2, 3, 1).tolist() == [5, 7, 9] and level_positions(0, 2, 2).tolist() == [2, 6]


def test_streamed_outputs_equal_the_result(tmp_path, bundle):
    picture = blob_image(600, 400, seed=10)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(64, 64))
    result = iterseg.two_stage(path, bundle, stream=True, patches=4, patch_size=48)
    fraction = write_mask_pyramid(tmp_path / "m.tif", result, bundle.num_classes)
    write_probs_pyramid(tmp_path / "p.tif", result, bundle.num_classes)
    mask = result.mask_at(np.arange(600), np.arange(400))
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.pages[0].is_tiled and [lvl.shape for lvl in tif.series[0].levels][:2] == [(600, 400), (300, 200)]
        np.testing.assert_array_equal(tif.asarray(), mask * 255)
        np.testing.assert_array_equal(tif.series[0].levels[1].asarray(), mask[1::2, 1::2] * 255)
    # region-by-region matrix products round differently from the whole-image one (BLAS blocking)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "p.tif"), full_probs(result)[0], rtol=0, atol=1e-6)
    assert fraction == pytest.approx(mask.mean())
    image, small_mask, windows = overview(result)
    assert image.shape[:2] == small_mask.shape == result.view.shape[:2] and windows.shape == (4, 4)
    np.testing.assert_array_equal(windows, np.round(result.windows * np.array([75 / 600, 50 / 400] * 2)))


def test_streamed_multiclass_outputs_hold_class_ids_and_one_plane_per_class(tmp_path):
    bundle = multiclass_bundle()
    path = write_tiled(tmp_path / "t.tif", blob_image(96, 80, seed=2), tile=(32, 32))
    result = iterseg.two_stage(path, bundle, stream=True, patches=3)
    write_mask_pyramid(tmp_path / "m.tif", result, bundle.num_classes)
    write_probs_pyramid(tmp_path / "p.tif", result, bundle.num_classes)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), result.mask_at(np.arange(96), np.arange(80)))
    probs = tifffile.imread(tmp_path / "p.tif")
    assert probs.shape == (96, 80, 4)
    np.testing.assert_allclose(np.moveaxis(probs, -1, 0), full_probs(result), atol=1e-6)
