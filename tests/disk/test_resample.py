"""A file read at the pixel size a model was trained at: the pyramid level that matches, else the
nearest finer one resampled; regions of the view equal the resized level, mirrored past the edges."""
import cv2
import numpy as np
import pytest

from iterseg.disk.resample import TOLERANCE, ResampledReader, resize, working_resolution
from iterseg.disk.slide import Slide
from iterseg.disk.tiff import mirror_index

from synthetic import blob_image, write_slide

LEVELS = [(600, 800, 3), (150, 200, 3), (38, 50, 3)]  # an Aperio-like pyramid: downsample 4


def test_a_level_that_matches_is_read_as_it_is():
    working, note = working_resolution((0.25, 0.25), LEVELS, 1.0)
    assert note is None and (working.level, working.shape) == (1, (150, 200))
    assert working.pixel_size == pytest.approx((1.0, 1.0)) and "ran on pyramid level 1, 200 x 150 px" in working.note
    close = working_resolution((0.25, 0.25), LEVELS, 1.0 * (TOLERANCE - 0.05))[0]
    assert (close.level, close.shape) == (1, (150, 200))  # within the tolerance: the level, not a resample


def test_between_levels_the_finer_one_is_resampled():
    working, _ = working_resolution((0.25, 0.25), LEVELS, 0.5)
    assert (working.level, working.shape) == (0, (300, 400)) and working.pixel_size == pytest.approx((0.5, 0.5))
    assert "level 0 resampled" in working.note
    working, _ = working_resolution((0.25, 0.25), LEVELS, 2.0)
    assert (working.level, working.shape) == (1, (75, 100)) and "level 1 resampled" in working.note
    only_level0 = working_resolution((0.25, 0.25), LEVELS, 1.0, levels_readable=False)[0]
    assert (only_level0.level, only_level0.shape) == (0, (150, 200))


def test_the_image_is_run_as_stored_when_it_is_at_or_coarser_than_the_model():
    assert working_resolution((0.25, 0.25), LEVELS, 0.26) == (None, None)
    assert working_resolution(None, LEVELS, 0.5) == (None, None)
    assert working_resolution((0.25, 0.25), LEVELS, None) == (None, None)
    working, note = working_resolution((0.5, 0.5), LEVELS, 0.25)
    assert working is None and "larger than the model's (0.25 µm): run as stored" in note


def test_resize_keeps_the_dtype_of_any_image():
    for dtype in (np.uint8, np.uint16, np.int32, np.float32, np.bool_):
        pixels = (np.arange(64 * 48).reshape(64, 48) % 7).astype(dtype)
        out = resize(pixels, 16, 12)
        assert out.shape == (16, 12) and out.dtype == dtype


def test_a_resampled_slide_reads_what_resizing_its_level_gives(tmp_path):
    image = blob_image(600, 800, seed=2)
    write_slide(tmp_path / "s.svs", image, tile=(64, 64), mpp=0.25)
    with Slide(tmp_path / "s.svs") as slide:
        level0 = slide.read_region(0, 0, 600, 800)
        working = working_resolution(slide.info.mpp, slide.level_shapes, 0.5)[0]
        view = ResampledReader(slide, working)
        assert view.shape == (300, 400, 3) and view.level_shapes[1:] == slide.level_shapes[1:]
        expected = cv2.resize(level0, (400, 300), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(view.read_region(40, 60, 64, 32), expected[40:104, 60:92])
        rows, cols = mirror_index(np.arange(-8, 8), 300), mirror_index(np.arange(390, 406), 400)
        edge = view.read_region(-8, 390, 16, 16)  # mirrored past the top and the right, as np.pad 'reflect'
        np.testing.assert_array_equal(edge, expected[rows[:, None], cols[None, :]])
        assert view.tiles_read == slide.tiles_read > 0
