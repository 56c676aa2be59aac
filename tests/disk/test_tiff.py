"""Tiled TIFFs: regions read tile by tile (mirrored at the edges) and pyramids written tile by tile."""
import numpy as np
import pytest
import tifffile

from iterseg.disk.tiff import TiledImage, mirror_index, tiled_reason
from iterseg.errors import InputError

from synthetic import blob_image, write_tiled


@pytest.fixture
def picture():
    return blob_image(150, 230, seed=4)


@pytest.mark.parametrize("region", [(0, 0, 150, 230), (10, 20, 30, 40), (60, 60, 64, 64), (140, 200, 40, 50),
                                    (-5, -7, 20, 20), (0, 0, 1, 1)])
def test_regions_equal_the_mirrored_image(tmp_path, picture, region):
    path = write_tiled(tmp_path / "t.tif", picture)
    with TiledImage(path) as source:
        got = source.read_region(*region)
    y, x, h, w = region
    padded = np.pad(picture, ((50, 50), (50, 50), (0, 0)), mode="reflect")  # mirrored, no edge repeat
    np.testing.assert_array_equal(got, padded[50 + y:50 + y + h, 50 + x:50 + x + w])


def test_a_region_reads_only_the_tiles_it_overlaps(tmp_path, picture):
    path = write_tiled(tmp_path / "t.tif", picture, tile=(32, 32))
    with TiledImage(path) as source:
        source.read_region(40, 70, 30, 20)      # rows 40-69 -> tile rows 1-2, cols 70-89 -> tile cols 2
        assert source.tiles_read == 2
        source.read_region(0, 0, 32, 32)
        assert source.tiles_read == 3


def test_pyramid_levels_and_gray_images(tmp_path, picture):
    gray = picture[:, :, 0]
    path = write_tiled(tmp_path / "g.tif", gray, tile=(32, 32), pyramid=True)
    with TiledImage(path) as source:
        assert source.level_shapes == [(150, 230), (75, 115), (38, 58), (19, 29)]
        assert source.read_region(5, 5, 10, 10).shape == (10, 10)
        np.testing.assert_array_equal(source.read_level(0), gray)


def test_untiled_files_cannot_be_streamed(tmp_path, picture):
    tifffile.imwrite(tmp_path / "strips.tif", picture)
    (tmp_path / "text.tif").write_text("not a tiff")
    assert "strips" in tiled_reason(tmp_path / "strips.tif")
    assert "cannot parse" in tiled_reason(tmp_path / "text.tif")
    assert "not a TIFF" in tiled_reason(tmp_path / "image.png")
    with pytest.raises(InputError, match="cannot be streamed: the TIFF is stored in strips"):
        TiledImage(tmp_path / "strips.tif")


def test_mirror_index_reflects_without_repeating_the_edge():
    assert mirror_index(np.arange(-3, 8), 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert mirror_index(np.arange(-2, 3), 1).tolist() == [0] * 5
    assert mirror_index(np.array([-1, 2, 3, 10]), 2).tolist() == [1, 0, 1, 0]


def test_a_tiff_with_empty_tiles_reads_as_zeros(tmp_path):
    picture = np.zeros((64, 64), np.uint8)
    picture[40:, 40:] = 9
    tifffile.imwrite(tmp_path / "sparse.tif", picture, tile=(32, 32))
    with TiledImage(tmp_path / "sparse.tif") as source:
        np.testing.assert_array_equal(source.read_region(0, 0, 64, 64), picture)
        assert source.dtype == np.uint8 and source.tile == (32, 32) and source.shape == (64, 64)
