"""The mask a user keeps: probability cut-off (binary models), small components removed, holes
filled; from the API (predict, predict_baseline) and refused where they cannot apply."""
import numpy as np
import pytest

import iterseg
from iterseg.api import Segmenter
from iterseg.errors import InputError
from iterseg.postprocess import check_mask_options, clean, fill_holes, remove_small

from synthetic import multiclass_bundle, write_tiled


def test_small_components_are_removed_per_class():
    mask = np.zeros((20, 20), np.uint8)
    mask[1:3, 1:3] = 1          # 4 px
    mask[5:12, 5:12] = 1        # 49 px
    mask[15:17, 15:18] = 2      # 6 px of another class
    cleaned, removed = remove_small(mask, 5)
    assert removed == 1 and cleaned[1:3, 1:3].max() == 0 and cleaned[5:12, 5:12].min() == 1
    assert (cleaned[15:17, 15:18] == 2).all()
    assert remove_small(mask, 7)[1] == 2 and remove_small(mask, 0)[1] == 0


def test_holes_are_filled_but_not_open_bays():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:12, 2:12] = 1
    mask[5:8, 5:8] = 0          # a hole
    mask[14:20, 14:20] = 1
    mask[17:20, 16:18] = 0      # a bay open to the border
    filled, count = fill_holes(mask)
    assert count == 1 and filled[5:8, 5:8].min() == 1 and filled[17:20, 16:18].max() == 0
    cleaned, notes = clean(mask, 10, True)
    assert notes == ["removed 0 connected components smaller than 10 px", "filled 1 holes"]


def test_the_options_are_checked():
    assert check_mask_options() == 0.5 and check_mask_options(0.3) == 0.3
    for bad in (0, 1, 1.5, "0.5"):
        with pytest.raises(InputError, match="cutoff must be a probability"):
            check_mask_options(bad)
    with pytest.raises(InputError, match="applies to binary models"):
        check_mask_options(0.3, classes=4)
    with pytest.raises(InputError, match="min_size must be a whole number"):
        check_mask_options(min_size=-1)
    with pytest.raises(InputError, match="streamed image"):
        check_mask_options(min_size=3, streamed=True)
    assert check_mask_options(0.7, streamed=True) == 0.7  # the cut-off applies tile by tile


def test_predict_applies_the_cutoff_and_the_clean_up(bundle, image):
    seg = Segmenter(bundle)
    plain = seg.predict(image, patches=2)
    for cutoff in (0.3, 0.7):
        result = seg.predict(image, patches=2, cutoff=cutoff)
        np.testing.assert_array_equal(result.mask, (result.probs >= cutoff).astype(np.uint8))
        assert result.options["cutoff"] == cutoff
    assert plain.options["cutoff"] == 0.5 and plain.options["min_size"] == 0
    big = seg.predict(image, patches=2, min_size=50, fill_holes=True)
    expected, _ = clean(plain.mask, 50, True)
    np.testing.assert_array_equal(big.mask, expected)
    assert any("connected components smaller than 50 px" in note for note in big.notes)
    base = seg.predict_baseline(image, cutoff=0.6)
    np.testing.assert_array_equal(base.mask, (base.probs >= 0.6).astype(np.uint8))


def test_a_streamed_result_takes_the_cutoff_but_refuses_the_clean_up(tmp_path, bundle, image):
    path = write_tiled(tmp_path / "t.tif", image, tile=(32, 32))
    seg = Segmenter(bundle)
    result = seg.predict(path, stream=True, patches=2, cutoff=0.4)
    rows, cols = np.arange(96), np.arange(128)
    np.testing.assert_array_equal(result.mask_at(rows, cols), (result.probs_at(rows, cols)[0] >= 0.4).astype(np.uint8))
    with pytest.raises(InputError, match="need the whole mask in memory"):
        seg.predict(path, stream=True, patches=2, fill_holes=True)


def test_multiclass_models_refuse_a_cutoff(image):
    with pytest.raises(InputError, match="binary models"):
        Segmenter(multiclass_bundle()).predict(image, cutoff=0.3)
    assert iterseg.Segmenter(multiclass_bundle()).predict(image, patches=1, min_size=4).mask.shape == image.shape[:2]


def test_the_mask_options_are_named_once(monkeypatch, bundle, tmp_path):
    """postprocess.MASK_OPTIONS is the one list: the API takes the mask options out of the others by
    it, batch hands the baseline those, the command line passes those (a module with its own list
    would still take min_size as a mask option here)."""
    from iterseg import postprocess
    from iterseg.cli import build_parser
    from iterseg.cli.predict import _options

    args = build_parser().parse_args(["predict", "x.png", "--cutoff", "0.4", "--min-size", "5", "--fill-holes"])
    assert {"cutoff": 0.4, "min_size": 5, "fill_holes": True}.items() <= _options(args).items()
    assert postprocess.mask_options({"cutoff": 0.4, "min_size": None, "patches": 3}) == {"cutoff": 0.4}
    monkeypatch.setattr(postprocess, "MASK_OPTIONS", ("cutoff", "fill_holes"))
    assert "min_size" not in _options(args) and postprocess.mask_options(_options(args)) == {
        "cutoff": 0.4, "fill_holes": True}
    segmenter = Segmenter(bundle)
    with pytest.raises(InputError, match="unknown option.*min_size"):
        segmenter.predict(np.zeros((32, 32, 3), np.uint8), patches=1, min_size=5)
