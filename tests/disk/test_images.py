"""Reading images in RGB order from every supported format, and the one-line errors of files that
cannot be read (damaged, truncated, oversized), fuzzed."""
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from iterseg.disk import images
from iterseg.disk.images import check_decoded_size, read_image
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


def test_tiff_stacks_and_two_channel_tiffs(tmp_path):
    two = np.random.default_rng(0).integers(0, 255, (20, 30, 2), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", two)
    np.testing.assert_array_equal(read_image(tmp_path / "two.tif"), two)
    stack = np.random.default_rng(1).integers(0, 255, (2, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif"), stack[0])



def test_a_truncated_jpeg_is_refused_not_filled_with_gray(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match="JPEG .*cut.jpg is truncated .*export it again"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "padded.jpg").write_bytes(data + b"\0\0\r\n")  # trailing padding after the marker is fine
    assert read_image(tmp_path / "padded.jpg").shape == (64, 64, 3)


def test_an_image_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        offsets = [tif.pages[0].tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    data = bytearray((tmp_path / "t.tif").read_bytes())
    for offset in offsets:
        data[offset:offset + 4] = struct.pack("<I", 200_000)
    (tmp_path / "huge.tif").write_bytes(bytes(data))
    with pytest.raises(InputError, match="200000 x 200000 pixels .*tiled TIFF"):
        read_image(tmp_path / "huge.tif")
    monkeypatch.setattr(images, "memory_budget", lambda: 1000)
    with pytest.raises(InputError, match="more than this machine can hold"):
        check_decoded_size("x.png", (20, 20, 3))
    check_decoded_size("x.png", (10, 10, 2))


SUFFIXES = [".png", ".jpg", ".tif", ".bmp", ".gif", ".pgm", ".webp"]
HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"BM",
           b"GIF89a"]


@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_fuzz_the_image_reader(header, body, suffix):
    """Random bytes behind real magic numbers: an image or an InputError, never another exception."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(header + body)
        try:
            image = read_image(path)
        except InputError:
            return
        assert image.ndim in (2, 3) and image.size > 0
