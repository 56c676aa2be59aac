"""Tiled TIFFs: regions read tile by tile (mirrored at the edges) and pyramids written tile by tile."""
import numpy as np
import pytest
import tifffile

from iterseg.disk.tiff import TiledImage, pyramid_shapes, pyramid_tiles, tiled_reason, write_pyramid
from iterseg.errors import InputError
from iterseg.infer import gather_boxes

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
    expected = gather_boxes(picture, np.array([region]))[0]
    np.testing.assert_array_equal(got, expected)


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
    assert pyramid_shapes(150, 230, (32, 32)) == [(150, 230), (75, 115), (38, 58), (19, 29)]
    assert pyramid_tiles(150, 230, (32, 32)) == 5 * 8 + 3 * 4 + 2 * 2 + 1


def test_untiled_files_cannot_be_streamed(tmp_path, picture):
    tifffile.imwrite(tmp_path / "strips.tif", picture)
    (tmp_path / "text.tif").write_text("not a tiff")
    assert "strips" in tiled_reason(tmp_path / "strips.tif")
    assert "cannot parse" in tiled_reason(tmp_path / "text.tif")
    assert "not a TIFF" in tiled_reason(tmp_path / "image.png")
    with pytest.raises(InputError, match="cannot be streamed: the TIFF is stored in strips"):
        TiledImage(tmp_path / "strips.tif")


def test_a_failing_writer_leaves_no_file(tmp_path):
    def region(level, y, x, h, w):
        if y > 0:
            raise RuntimeError("generator failed")
        return np.zeros((h, w), np.uint8)

    with pytest.raises(RuntimeError):
        write_pyramid(tmp_path / "m.tif", (100, 100), np.uint8, region, tile=(32, 32))
    assert list(tmp_path.iterdir()) == []


def test_the_synthetic_generator_writes_a_consistent_pyramid(tmp_path):
    from benchmarks.synthetic_tiff import write_synthetic_tiff
    levels = write_synthetic_tiff(tmp_path / "s.tif", 700, 900, seed=1, tile=(256, 256), compression="zlib")
    assert levels == [(700, 900), (350, 450), (175, 225)]
    with TiledImage(tmp_path / "s.tif") as source:
        assert source.level_shapes == [(700, 900, 3), (350, 450, 3), (175, 225, 3)]
        full, half = source.read_level(0).astype(float), source.read_level(1).astype(float)
        assert source.read_region(300, 400, 50, 60).shape == (50, 60, 3)
    # level 1 samples the same picture: close to level 0 averaged over 2 x 2 blocks (noise aside)
    pooled = full.reshape(350, 2, 450, 2, 3).mean(axis=(1, 3))
    assert np.abs(pooled - half).mean() < 8
