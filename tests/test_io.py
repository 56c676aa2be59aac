"""Reading images in RGB order from every supported format, and atomic writes."""
import cv2
import numpy as np
import pytest
import tifffile

from iterseg.disk.images import read_image
from iterseg.disk.outputs import atomic_output, overlay, write_json, write_mask, write_probs
from iterseg.errors import InputError


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".ppm", ".tif"])
def test_colour_images_come_back_in_rgb_order(tmp_path, suffix):
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / f"red{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, rgb)
    else:
        cv2.imwrite(str(path), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(path), rgb)


def test_jpeg_gray_rgba_and_16_bit(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((8, 8, 3), (10, 20, 200), np.uint8))
    assert read_image(tmp_path / "a.jpg")[0, 0, 0] > 150  # red first
    cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 4), 7, np.uint8))
    assert read_image(tmp_path / "g.png").shape == (4, 4)
    rgba = np.dstack([np.full((4, 4, 3), (1, 2, 3), np.uint8), np.full((4, 4), 9, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba[:, :, [2, 1, 0, 3]])
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0, 0], [1, 2, 3, 9])
    tifffile.imwrite(tmp_path / "d.tif", np.full((3, 5), 60000, np.uint16))
    assert read_image(tmp_path / "d.tif").dtype == np.uint16


def test_planar_tiff_is_moved_to_channels_last(tmp_path):
    planar = np.arange(3 * 10 * 12, dtype=np.uint8).reshape(3, 10, 12)
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), planar.transpose(1, 2, 0))


def test_unreadable_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot decode"):
        read_image(tmp_path / "text.png")
    (tmp_path / "text.tif").write_text("not a tiff")
    with pytest.raises(InputError, match="cannot read TIFF"):
        read_image(tmp_path / "text.tif")


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


def test_tiff_stacks_and_two_channel_tiffs(tmp_path):
    two = np.random.default_rng(0).integers(0, 255, (20, 30, 2), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", two)
    np.testing.assert_array_equal(read_image(tmp_path / "two.tif"), two)
    stack = np.random.default_rng(1).integers(0, 255, (2, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif"), stack[0])
