"""OME-Zarr through ome-zarr: a multiscale image read like a pyramid (regions mirrored past the
edges, chunks counted, the pixel size from its scale and units), labels written as an NGFF labels
group that ome-zarr's reader opens, and a one-line refusal of what is not a 2-D image."""
import numpy as np
import pytest

from iterseg.disk.ngff import NgffImage, read_labels, write_mask_labels
from iterseg.errors import InputError

from synthetic import blob_image, write_ngff

pytest.importorskip("ome_zarr")


def test_a_multiscale_image_reads_like_a_pyramid(tmp_path):
    image = blob_image(300, 400, seed=2)
    with NgffImage(write_ngff(tmp_path / "img.ome.zarr", image, chunk=64)) as zarr_image:
        assert zarr_image.shape == (300, 400, 3) and zarr_image.tile == (64, 64) and zarr_image.pixel_size == (0.5, 0.5)
        assert zarr_image.level_shapes == [(300, 400, 3), (150, 200, 3), (75, 100, 3)]
        np.testing.assert_array_equal(zarr_image.read_region(50, 120, 60, 60), image[50:110, 120:180])
        assert zarr_image.tiles_read == 4
        rows, cols = np.abs(np.arange(-5, 45)), 399 - np.abs(399 - np.arange(380, 430))
        np.testing.assert_array_equal(zarr_image.read_region(-5, 380, 50, 50), image[rows][:, cols])
        assert zarr_image.read_level_region(2, 0, 0, 75, 100).shape == (75, 100, 3)


def test_labels_written_are_what_ome_zarr_reads(tmp_path):
    mask = (blob_image(200, 300, seed=1)[:, :, 0] > 128).astype(np.uint8)
    def mask_at(rows, cols):  # level positions may pass the last pixel, as Result.mask_at accepts
        return mask[np.ix_(np.minimum(rows, 199), np.minimum(cols, 299))]

    fraction = write_mask_labels(tmp_path / "m.mask.zarr", mask.shape, mask_at, ("background", "lesion"),
                                 pixel_size=(0.5, 0.25), tile=(64, 64))
    labels, metadata = read_labels(tmp_path / "m.mask.zarr")
    np.testing.assert_array_equal(labels, mask)
    assert fraction == pytest.approx(mask.mean())
    assert metadata["name"] == "mask" and metadata["properties"][1]["class"] == "lesion"
    assert metadata["coordinateTransformations"][0][0] == {"type": "scale", "scale": [0.5, 0.25]}
    assert not list(tmp_path.glob(".*partial*"))


def test_what_is_not_a_2d_image_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError, match="empty.zarr") as caught:
        NgffImage(tmp_path / "empty.zarr")
    assert "\n" not in str(caught.value)
