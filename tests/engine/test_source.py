"""Sources: the one rule from stored values to [0, 1], channel fitting, and a tiled TIFF read tile by
tile giving the same pixels, stage-1 view and notes as the image in memory."""
import numpy as np
import pytest
import tifffile
import torch

import iterseg
from iterseg.disk.tiff import mirror_index
from iterseg.engine import source as source_module
from iterseg.engine.source import (
    ArraySource,
    TiffSource,
    fit_channels,
    open_source,
    shrink,
    unit_range,
)
from iterseg.errors import InputError

from synthetic import blob_image, write_ngff, write_slide, write_tiled

# dtype, extent (None: by dtype; (low, high): intensity minmax), expected (offset, scale), words of the note
UNIT_RANGES = [
    (np.uint8, None, (0, 1 / 255), None),
    (np.uint16, None, (0, 1 / 65535), "uint16 image scaled by 1/65535"),
    (np.bool_, None, (0, 1), "boolean image read as 0/1"),
    (np.bool_, (0, 1), (0, 1), "boolean image read as 0/1"),
    (np.int16, None, (0, 1 / 32767), "int16 image scaled by 1/32767 to [0, 1]; intensity='minmax'"),
    (np.uint32, None, (0, 1 / 4294967295), "uint32 image scaled by 1/4.29497e+09"),
    (np.int64, None, (0, 1 / np.iinfo(np.int64).max), "int64 image scaled by"),
    (np.float32, None, (0, 1), None),                                   # floats as given
    (np.float64, None, (0, 1), None),
    (np.uint8, (3, 7), (3, 1 / 4), "uint8 image with values in [3, 7] rescaled to [0, 1] (intensity minmax)"),
    (np.int16, (-100, 100), (-100, 1 / 200), "int16 image with values in [-100, 100] rescaled"),
    (np.float32, (-0.5, 1.5), (-0.5, 1 / 2), "values in [-0.5, 1.5] rescaled"),
]


@pytest.mark.parametrize("dtype, extent, expected, note", UNIT_RANGES)
def test_unit_range_rule(dtype, extent, expected, note):
    rule = unit_range(dtype, extent, "dtype" if extent is None else "minmax")
    assert (rule.offset, rule.scale) == pytest.approx(expected)
    assert (rule.note is None) if note is None else (note in rule.note), rule.note


def test_unit_range_maps_by_dtype_or_the_extent_onto_zero_to_one_and_clips():
    values = np.array([-100, -20, 0, 100], np.int16)
    np.testing.assert_allclose(unit_range(values.dtype, (-100, 100), "minmax").apply(values), [0, 0.4, 0.5, 1])
    np.testing.assert_allclose(unit_range(values.dtype).apply(values), [0, 0, 0, 100 / 32767])
    np.testing.assert_allclose(unit_range(np.uint8).apply(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])
    floats = np.array([-0.5, 0.25, 3.0], np.float32)
    clipped = unit_range(floats.dtype, (-0.5, 3.0))
    np.testing.assert_allclose(clipped.apply(floats), [0, 0.25, 1])  # as given, clipped
    assert "values in [-0.5, 3] clipped to [0, 1]; intensity='minmax'" in clipped.note
    assert unit_range(floats.dtype, (0.0, 1.0)).note is None
    assert unit_range(np.float32).apply(np.array([0.25], np.float32)).dtype == np.float32


def test_the_same_value_means_the_same_in_every_image_of_a_dtype():
    """By dtype, not by each image's own range: two int32 images of other ranges share their values' meaning."""
    dark, bright = np.array([[0, 200]], np.int32), np.array([[0, 200], [300, 70000]], np.int32)
    assert ArraySource(dark, 1).unit[0, 1, 0] == ArraySource(bright, 1).unit[0, 1, 0]
    assert ArraySource(dark, 1, "minmax").unit[0, 1, 0] != ArraySource(bright, 1, "minmax").unit[0, 1, 0]
    with pytest.raises(InputError, match="intensity must be one of dtype, minmax"):
        ArraySource(dark, 1, "percentile")


def test_tensors_read_like_their_dtype():
    image = blob_image(20, 30, seed=1)
    np.testing.assert_array_equal(ArraySource(torch.from_numpy(image.copy()), 3).unit, ArraySource(image, 3).unit)


def test_minmax_rescales_negative_integers_and_floats_beyond_one_from_their_extent():
    ints = np.array([[-10, 0], [10, 30]], np.int32)
    np.testing.assert_allclose(ArraySource(ints, 1, "minmax").unit[:, :, 0], [[0, 0.25], [0.5, 1]])
    floats = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)
    source = ArraySource(floats, 1, "minmax")
    np.testing.assert_allclose(source.unit[:, :, 0], [[0, 0.25], [0.5, 1]])
    assert any("rescaled to [0, 1]" in note for note in source.notes)


@pytest.mark.parametrize("have, channels, note", [
    (1, 3, "grayscale image repeated to 3 channels"), (2, 3, "(alpha dropped)"), (4, 3, "alpha channel dropped"),
    (3, 1, "ITU-R BT.601"), (4, 1, "(alpha dropped)"), (2, 1, "alpha channel dropped"), (3, 3, None)])
def test_fit_channels(have, channels, note):
    image = np.random.default_rng(have).random((5, 6, have), dtype=np.float32)
    fitted, said = fit_channels(image, channels)
    assert fitted.shape == (5, 6, channels) and (said is None if note is None else note in said)
    if have in (1, 2) and channels == 3:
        np.testing.assert_array_equal(fitted, np.repeat(image[:, :, :1], 3, axis=2))
    if have in (3, 4) and channels == 1:
        np.testing.assert_allclose(fitted[:, :, 0], image[:, :, :3] @ [0.299, 0.587, 0.114], rtol=1e-6)


def test_a_channel_count_the_model_cannot_take():
    with pytest.raises(InputError, match="image has 3 channels but the model takes 2"):
        fit_channels(np.zeros((4, 4, 3), np.float32), 2)


@pytest.mark.parametrize("image, words", [
    (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((3, 20, 20), np.uint8), "transpose a (C, H, W) array"),
    (np.zeros((0, 5), np.uint8), "non-empty"),
    (np.zeros((4, 4, 4, 1), np.uint8), "non-empty (H, W) or (H, W, C)"),
    (np.zeros((4, 4), np.complex64), "unsupported image dtype"),
])
def test_bad_images_raise_input_error(image, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ArraySource(image, 3)


@pytest.mark.parametrize("make, note", [
    (lambda im: im[:, :, 0], "grayscale image repeated to 3 channels"),
    (lambda im: np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]), "alpha channel dropped"),
    (lambda im: im.astype(np.uint16) * 257, "uint16 image scaled by 1/65535"),
    (lambda im: im.astype(np.float32) / 255, None),
    (lambda im: im.astype(np.float64) / 255, None),
], ids=["gray", "alpha", "uint16", "float", "float64"])
def test_image_kinds_give_the_same_segmentation(bundle, image, make, note):
    given = make(image)
    # a gray image is segmented as the RGB image with its one channel repeated
    same = np.repeat(given[:, :, None], 3, axis=2) if given.ndim == 2 else image
    reference = iterseg.two_stage(same, bundle, patches=4)
    result = iterseg.two_stage(given, bundle, patches=4)
    np.testing.assert_allclose(result.probs, reference.probs, atol=1e-4)
    np.testing.assert_array_equal(result.windows, reference.windows)
    assert (not result.notes) if note is None else any(note in n for n in result.notes), result.notes


@pytest.fixture
def small_strips(monkeypatch):
    """TIFF sources read 16 rows at a time, so that a small image is scanned in many strips."""
    monkeypatch.setattr(source_module, "STRIP_ROWS", 16)


TIFF_KINDS = {
    "uint8": blob_image(70, 90, seed=3),
    "gray": blob_image(70, 90, seed=3)[:, :, 0],
    "uint16": blob_image(70, 90, seed=3).astype(np.uint16) * 200,
    "float beyond [0, 1]": blob_image(70, 90, seed=3).astype(np.float32) / 40 - 1.5,
    "negative int16": blob_image(70, 90, seed=3).astype(np.int16) - 100,
}


@pytest.mark.parametrize("intensity", ["dtype", "minmax"])
@pytest.mark.parametrize("kind", TIFF_KINDS)
def test_tiff_source_reads_what_the_array_source_holds(tmp_path, small_strips, kind, intensity):
    picture = TIFF_KINDS[kind]
    path = write_tiled(tmp_path / "t.tif", picture, tile=(32, 32))
    memory = ArraySource(picture, 3, intensity)
    boxes = np.array([[0, 0, 24, 40], [50, 60, 24, 40], [-5, -9, 24, 40], [60, 70, 24, 40]])  # mirrored at edges
    with TiffSource(path, 3, intensity=intensity) as streamed:
        assert streamed.shape == memory.shape and streamed.notes == memory.notes
        np.testing.assert_array_equal(streamed.read_boxes(boxes), memory.read_boxes(boxes))
        for h1, w1 in ((9, 11), (35, 45), (70, 90), (4, 7)):
            view, note = streamed.view(h1, w1)
            assert note is None  # no pyramid: shrunk from level-0 strips
            np.testing.assert_allclose(view, memory.view(h1, w1)[0], atol=1e-5)


def test_minmax_scales_a_float_tiff_once_for_the_whole_image(tmp_path, small_strips, bundle):
    """Each 16-row strip holds another range; the extent is the image's, so streamed equals in memory."""
    picture = blob_image(96, 80, seed=4).astype(np.float32) / 50
    picture += np.linspace(-3, 4, 96, dtype=np.float32)[:, None, None]
    path = write_tiled(tmp_path / "f.tif", picture, tile=(32, 32))
    memory = iterseg.two_stage(picture, bundle, patches=5, intensity="minmax")
    streamed = iterseg.two_stage(path, bundle, stream=True, patches=5, intensity="minmax")
    assert streamed.notes[0] == memory.notes[0] and "rescaled to [0, 1]" in memory.notes[0]
    np.testing.assert_array_equal(streamed.windows, memory.windows)
    np.testing.assert_allclose(streamed.probs_at(np.arange(96), np.arange(80))[0], memory.probs, atol=1e-5)


def test_a_tiff_with_nan_is_refused_and_closed(tmp_path, monkeypatch):
    picture = blob_image(40, 40, seed=1).astype(np.float32) / 255
    picture[30, 5, 1] = np.nan
    path = write_tiled(tmp_path / "n.tif", picture, tile=(16, 16))
    closed = []
    real_close = source_module.TiledImage.close
    monkeypatch.setattr(source_module.TiledImage, "close", lambda self: closed.append(real_close(self)))
    with pytest.raises(InputError, match="contains NaN or infinite values near row 0"):
        TiffSource(path, 3)
    assert len(closed) == 1


def test_a_pyramid_level_serves_as_the_stage1_view(tmp_path):
    picture = blob_image(256, 192, seed=7)
    path = write_tiled(tmp_path / "p.tif", picture, tile=(32, 32), pyramid=True)
    with TiffSource(path, 3) as streamed:
        assert streamed.tiff.level_shapes[1:] == [(128, 96, 3), (64, 48, 3), (32, 24, 3)]
        view, note = streamed.view(32, 24)  # level 3 is exactly the stage-1 size
        assert note == "stage 1 read pyramid level 3 (24 x 32 after INTER_AREA)"
        assert streamed.view(40, 30)[1].startswith("stage 1 read pyramid level 2")  # the smallest that is larger
        assert streamed.tiles_read == 0  # pyramid levels are not counted as level-0 tiles
        np.testing.assert_allclose(view, shrink(ArraySource(picture, 3).unit, 32, 24), atol=0.02)


def test_open_source(tmp_path, image, image_path):
    memory = ArraySource(image, 3)
    assert open_source(memory, 3) is memory
    from_file = open_source(image_path, 3)
    assert isinstance(from_file, ArraySource) and from_file.tiles_read is None
    np.testing.assert_array_equal(from_file.unit, memory.unit)
    path = write_tiled(tmp_path / "t.tif", image, tile=(32, 32))
    with open_source(path, 3, stream=True) as streamed:
        assert isinstance(streamed, TiffSource) and not streamed.in_memory
    with pytest.raises(InputError, match="cannot be streamed"):
        open_source(image_path, 3, stream=True)


def test_torch_tensors_are_read_as_arrays_or_refused_in_one_line():
    pixels = np.random.default_rng(0).random((12, 10, 3), dtype=np.float32)
    expected = ArraySource(pixels, 3).unit
    for tensor in (torch.from_numpy(pixels).requires_grad_(), torch.from_numpy(pixels)):
        np.testing.assert_array_equal(ArraySource(tensor, 3).unit, expected)
    close = ArraySource(torch.from_numpy(pixels).bfloat16(), 3).unit  # bf16 values, read as float32
    np.testing.assert_allclose(close, expected, atol=1e-2)
    with pytest.raises(InputError, match="pass a CPU tensor or a NumPy array"):
        ArraySource(torch.empty(12, 10, 3, device="meta"), 3)


@pytest.mark.parametrize("kind", ["svs", "ome.zarr"])
def test_slides_and_ome_zarr_stream_like_a_tiff(tmp_path, small_strips, kind):
    """Level 0 read by boxes and strips as in memory; the stage-1 view from a level read in strips
    equals that level shrunk whole (INTER_AREA), so a level is never decoded whole."""
    if kind == "ome.zarr":
        pytest.importorskip("ome_zarr")
    picture = blob_image(160, 200, seed=5)
    path = tmp_path / f"s.{kind}"
    if kind == "svs":
        levels = write_slide(path, picture, tile=(32, 32), levels=2)  # level 1: 40 x 50
    else:
        import zarr
        write_ngff(path, picture, chunk=32, levels=2)  # level 1: 80 x 100
        group = zarr.open_group(str(path), mode="r")
        level1 = sorted(group.arrays())[1][1]  # the second dataset, as ome-zarr's writer made it
        levels = [picture, np.moveaxis(level1[:], 0, -1)]
    memory = ArraySource(picture, 3)
    boxes = np.array([[0, 0, 24, 40], [130, 150, 24, 40], [-5, -9, 24, 40], [150, 180, 24, 40]])
    with TiffSource(path, 3) as streamed:
        np.testing.assert_array_equal(streamed.read_boxes(boxes), memory.read_boxes(boxes))
        view, note = streamed.view(150, 190)  # no level but 0 is that large: level-0 strips
        assert note is None
        np.testing.assert_allclose(view, memory.view(150, 190)[0], atol=1e-5)
        view, note = streamed.view(30, 36)
        assert note.startswith("stage 1 read pyramid level 1")
        np.testing.assert_allclose(view, shrink(ArraySource(levels[1], 3).unit, 30, 36), atol=1e-5)


@pytest.mark.parametrize("shape, view_shape, dtype", [
    ((1100, 90, 3), (275, 45), np.uint8), ((64, 90), (32, 45), np.uint16), ((1030, 70, 4), (515, 35), np.uint8),
    ((1100, 90, 3), (275, 47), np.uint8), ((1100, 90, 3), (275, 45), np.int16), ((99, 70, 3), (40, 28), np.uint8)])
def test_an_array_is_read_in_unit_floats_without_a_full_resolution_copy(shape, view_shape, dtype, monkeypatch):
    """Boxes and the stage-1 view equal those of the whole image in unit floats (whole factors: stored
    values averaged, or strip by strip; others from the whole image), and whole factors never make a
    full float copy."""
    pixels = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    source = ArraySource(pixels, 3)
    whole = source.unit
    boxes = np.array([[-5, -7, 40, 40], [shape[0] - 20, shape[1] - 30, 40, 40]])
    np.testing.assert_array_equal(source.read_boxes(boxes), source_module.gather_boxes(whole, boxes))
    sizes = []
    to_unit = source.to_unit
    monkeypatch.setattr(source, "to_unit", lambda p: sizes.append(p.shape[0]) or to_unit(p))
    view, _ = source.view(*view_shape)
    np.testing.assert_allclose(view, shrink(whole, *view_shape), atol=1e-6)
    if shape[0] % view_shape[0] == 0:
        assert max(sizes) < shape[0]


def test_every_source_is_a_source_and_a_partial_one_is_refused(tmp_path, bundle):
    from iterseg.engine.networks import TensorSource
    from iterseg.engine.source import Source

    picture = blob_image(64, 48)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(32, 32))
    with TiffSource(path, 3) as streamed:
        assert isinstance(streamed, Source)
    memory = ArraySource(picture, 3)
    assert isinstance(memory, Source) and isinstance(TensorSource(np.zeros((8, 8, 3))), Source)
    assert open_source(memory, 3) is memory  # a Source is taken as it is

    class BoxesOnly:  # has read_boxes, not the rest of a Source: not one
        def read_boxes(self, boxes):
            return memory.read_boxes(boxes)

    assert not isinstance(BoxesOnly(), Source)
    with pytest.raises(InputError):
        iterseg.two_stage(BoxesOnly(), bundle, patches=1)


def test_auto_streams_only_large_tiled_tiffs(tmp_path, monkeypatch):
    path = write_tiled(tmp_path / "scan.tif", blob_image(100, 100), tile=(32, 32))
    assert open_source(path, 3, "auto").in_memory
    monkeypatch.setattr(source_module, "STREAM_PIXELS", 50 * 50)
    with open_source(path, 3, "auto") as streamed:
        assert not streamed.in_memory
    tifffile.imwrite(tmp_path / "strips.tif", blob_image(100, 100))
    memory = open_source(tmp_path / "strips.tif", 3, "always")
    assert memory.in_memory and "read whole: the TIFF is stored in strips" in memory.notes[-1]
    with pytest.raises(InputError, match="cannot be streamed: the TIFF is stored in strips"):
        open_source(tmp_path / "strips.tif", 3, True)  # the API's stream=True: must
    with pytest.raises(InputError, match="stream must be"):
        open_source(path, 3, "sometimes")


def test_a_large_untiled_tiff_is_read_whole_with_a_note(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "strips.tif", blob_image(100, 100))
    assert not any("read whole" in note for note in open_source(tmp_path / "strips.tif", 3, "auto").notes)
    monkeypatch.setattr(source_module, "STREAM_PIXELS", 50 * 50)
    source = open_source(tmp_path / "strips.tif", 3, "auto")
    assert source.in_memory and "read whole" in source.notes[-1]


@pytest.mark.parametrize("dtype, channels", [(np.float32, (3,)), (np.uint8, ()), (np.uint16, (600,)), (np.bool_, (2,)),
                                             (np.uint32, (1,))])
def test_boxes_past_the_edges_are_mirrored_for_every_dtype(dtype, channels):
    array = (np.random.default_rng(1).random((30, 20) + channels) * 200).astype(dtype)
    boxes = np.array([[-3, -5, 24, 16], [20, 10, 24, 16], [0, 0, 24, 16], [-20, 15, 24, 16]])
    expected = [array[mirror_index(y + np.arange(h), 30)[:, None], mirror_index(x + np.arange(w), 20)[None, :]]
                for y, x, h, w in boxes]
    np.testing.assert_array_equal(source_module.gather_boxes(array, boxes), np.stack(expected))
