"""Pyramids written tile by tile (iterseg/disk/pyramid.py): level shapes, atomic writes, and a
streamed result's mask and probabilities equal to the result."""
import numpy as np
import pytest
import tifffile

import iterseg
from iterseg.disk.outputs import overview
from iterseg.disk.pyramid import (
    level_positions,
    pyramid_shapes,
    pyramid_tiles,
    write_mask_pyramid,
    write_probs_pyramid,
    write_pyramid,
)

from synthetic import blob_image, multiclass_bundle, write_tiled


def full_probs(result):
    height, width = result.shape
    return result.probs_at(np.arange(height), np.arange(width))


def test_levels_halve_until_one_fits_a_tile():
    assert pyramid_shapes(150, 230, (32, 32)) == [(150, 230), (75, 115), (38, 58), (19, 29)]
    assert pyramid_tiles(150, 230, (32, 32)) == 5 * 8 + 3 * 4 + 2 * 2 + 1


def test_a_failing_writer_leaves_no_file(tmp_path):
    def region(level, y, x, h, w):
        if y > 0:
            raise RuntimeError("generator failed")
        return np.zeros((h, w), np.uint8)

    with pytest.raises(RuntimeError):
        write_pyramid(tmp_path / "m.tif", (100, 100), np.uint8, region, tile=(32, 32))
    assert list(tmp_path.iterdir()) == []


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
