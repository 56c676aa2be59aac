"""Whole-slide images through tiffslide: level-0 regions (mirrored past the edges) equal what was
written and count the tiles they overlap, lower levels read by region, MPP and objective power
from the Aperio description, and one-line refusals for damaged slides and missing OpenSlide."""
import sys

import numpy as np
import pytest

from iterseg.disk.images import read_image_noted
from iterseg.disk.slide import Slide
from iterseg.errors import InputError

from synthetic import blob_image, write_slide


@pytest.fixture
def slide_path(tmp_path):
    path = tmp_path / "scan.svs"
    write_slide(path, blob_image(300, 400, seed=3), tile=(64, 64), mpp=0.25)
    return path


def test_regions_levels_and_metadata_of_an_svs(slide_path):
    image = blob_image(300, 400, seed=3)
    with Slide(slide_path) as slide:
        assert slide.shape == (300, 400, 3) and slide.dtype == np.uint8 and slide.tile == (64, 64)
        assert slide.level_shapes == [(300, 400, 3), (75, 100, 3), (19, 25, 3)]
        assert slide.info.mpp == (0.25, 0.25) and slide.info.objective_power == 20 and slide.info.vendor == "aperio"
        np.testing.assert_array_equal(slide.read_region(50, 120, 60, 60), image[50:110, 120:180])
        assert slide.tiles_read == 2 * 2  # rows 50-109: tile rows 0 and 1; columns 120-179: tile columns 1 and 2
        rows, cols = np.abs(np.arange(-5, 45)), 399 - np.abs(399 - np.arange(380, 430))
        np.testing.assert_array_equal(slide.read_region(-5, 380, 50, 50), image[rows][:, cols])
        level = slide.read_level_region(1, 10, 20, 60, 40)
        assert slide.level_tiles_read == {1: 2}  # rows 10-69 of level 1: its tile rows 0 and 1
    assert level.shape == (60, 40, 3)


def test_a_small_slide_read_whole_is_level_0_not_a_first_frame(slide_path):
    image, notes = read_image_noted(slide_path)
    np.testing.assert_array_equal(image, blob_image(300, 400, seed=3))
    assert not any("frame" in note or "page" in note for note in notes)


def test_damaged_and_unsupported_slides_are_one_line_errors(slide_path, tmp_path, monkeypatch):
    cut = tmp_path / "cut.svs"
    cut.write_bytes(slide_path.read_bytes()[:3000])
    with pytest.raises(InputError, match="cut.svs") as caught:
        Slide(cut).read_region(0, 0, 300, 400)
    assert "\n" not in str(caught.value)
    text = tmp_path / "notes.ndpi"
    text.write_text("not a slide")
    with pytest.raises(InputError, match="cannot read slide .*notes.ndpi"):
        Slide(text)
    monkeypatch.setitem(sys.modules, "openslide", None)  # as without the wsi extra
    mrxs = tmp_path / "scan.mrxs"
    mrxs.write_bytes(b"[GENERAL]\n")
    with pytest.raises(InputError, match=r"pip install 'iterseg\[wsi\]'"):
        Slide(mrxs)


def test_the_streamed_pixel_limit_applies(slide_path):
    with pytest.raises(InputError, match="streamed"):
        Slide(slide_path, max_pixels=1000)


def test_openslide_reads_what_tiffslide_reads(slide_path, tmp_path):
    """The OpenSlide backend (chosen by suffix for .mrxs / .dcm, the file opened by its content): an
    SVS named .dcm is read through it, with the same pixels and metadata."""
    pytest.importorskip("openslide")
    through_openslide = tmp_path / "scan.dcm"
    through_openslide.write_bytes(slide_path.read_bytes())
    with Slide(slide_path) as tiff, Slide(through_openslide) as opened:
        assert (opened.backend, tiff.backend) == ("openslide", "tiffslide")
        assert opened.shape == tiff.shape and opened.level_shapes == tiff.level_shapes and opened.info == tiff.info
        np.testing.assert_array_equal(opened.read_region(-5, 380, 50, 50), tiff.read_region(-5, 380, 50, 50))
        np.testing.assert_array_equal(opened.read_level_region(1, 10, 20, 30, 40),
                                      tiff.read_level_region(1, 10, 20, 30, 40))
