"""Writing results: atomically, in the formats promised (0/255 or palette PNG masks, float32 TIFF
probabilities, overlays); the pyramids of streamed results: test_pyramid.py."""
import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from iterseg.disk.outputs import (
    atomic_output,
    display_rgb,
    overlay,
    write_json,
    write_mask,
    write_probs,
)

from synthetic import CLASS_COLOURS


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
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), np.moveaxis(probs, 0, -1))  # YXS, disk/ome.py
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
