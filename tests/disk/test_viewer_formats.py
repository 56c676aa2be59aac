"""Formats viewers open: pyramidal OME-TIFF masks and probabilities carrying the input's physical
pixel size (read back with tifffile), and the mask's contours as GeoJSON polygons (QuPath annotations)."""
import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tifffile

import iterseg
from iterseg.disk.outputs import (
    COLOURS,
    default_tint,
    mask_features,
    overlay,
    parse_colour,
    write_geojson,
    write_probs,
)
from iterseg.disk.pyramid import write_mask_pyramid, write_probs_pyramid, write_pyramid
from iterseg.disk.tiff import physical_size

from synthetic import CLASS_NAMES, blob_image, write_tiled


def ome_pixels(tif):
    """The attributes of the first OME Pixels element of an open TiffFile."""
    root = ElementTree.fromstring(tif.ome_metadata)
    return next(e for e in root.iter() if e.tag.endswith("}Pixels")).attrib


def test_a_streamed_mask_is_a_pyramidal_ome_tiff_with_the_physical_size(tmp_path, bundle):
    picture = blob_image(600, 400, seed=10)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(64, 64))
    result = iterseg.two_stage(path, bundle, stream=True, patches=4, patch_size=48)
    write_mask_pyramid(tmp_path / "m.tif", result, bundle.num_classes, pixel_size=(0.5, 0.25))
    write_probs_pyramid(tmp_path / "p.tif", result, bundle.num_classes, pixel_size=(0.5, 0.25))
    mask = result.mask_at(np.arange(600), np.arange(400))
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.is_ome and tif.is_bigtiff and tif.pages[0].is_tiled and len(tif.series) == 1
        assert len(tif.pages[0].subifds) == 1  # the reduced level is a SubIFD of level 0, as OME wants
        assert [level.shape for level in tif.series[0].levels] == [(600, 400), (300, 200)]
        pixels = ome_pixels(tif)
        assert float(pixels["PhysicalSizeY"]) == 0.5 and float(pixels["PhysicalSizeX"]) == 0.25
        assert pixels["PhysicalSizeXUnit"] == "µm" and pixels["Type"] == "uint8"
        np.testing.assert_array_equal(tif.series[0].levels[0].asarray(), mask * 255)
        np.testing.assert_array_equal(tif.series[0].levels[1].asarray(), mask[1::2, 1::2] * 255)
        x_res, y_res = tif.pages[0].tags["XResolution"].value, tif.pages[0].tags["YResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.25) and y_res[0] / y_res[1] == pytest.approx(1e4 / 0.5)
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        assert tif.is_ome and float(ome_pixels(tif)["PhysicalSizeX"]) == 0.25 and ome_pixels(tif)["Type"] == "float"
        assert len(tif.series[0].levels) == 2
        np.testing.assert_allclose(tif.asarray(), result.probs_at(np.arange(600), np.arange(400))[0], atol=1e-6)


def test_without_a_physical_size_the_ome_tiff_says_none(tmp_path):
    write_pyramid(tmp_path / "m.tif", (40, 30), np.uint8, lambda level, y, x, h, w: np.full((h, w), level, np.uint8),
                  tile=(16, 16), ome=True)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.is_ome and "PhysicalSizeX" not in ome_pixels(tif)
        assert [lvl.shape for lvl in tif.series[0].levels] == [(40, 30), (20, 15), (10, 8)]
        assert tif.series[0].levels[2].asarray().max() == 2
    assert physical_size(tmp_path / "m.tif") is None


def test_in_memory_probabilities_are_an_ome_tiff_with_one_sample_per_class(tmp_path):
    probs = np.random.default_rng(0).random((3, 20, 24), dtype=np.float32)
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_probs(tmp_path / run / "p.tif", probs, pixel_size=(2.0, 2.0))
    with tifffile.TiffFile(tmp_path / "a" / "p.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "YXS" and float(ome_pixels(tif)["PhysicalSizeY"]) == 2.0
        np.testing.assert_array_equal(tif.asarray(), np.moveaxis(probs, 0, -1))
    assert (tmp_path / "a" / "p.tif").read_bytes() == (tmp_path / "b" / "p.tif").read_bytes()  # no random UUID


def test_the_physical_size_is_read_from_ome_metadata_or_resolution_tags(tmp_path):
    image = np.zeros((32, 48), np.uint8)
    tifffile.imwrite(tmp_path / "ome.tif", image, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeYUnit": "nm"})
    assert physical_size(tmp_path / "ome.tif") == pytest.approx((0.3e-3, 0.2e-3))
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(1e4 / 0.5, 1e4 / 0.25), resolutionunit="CENTIMETER")
    assert physical_size(tmp_path / "cm.tif") == pytest.approx((0.25, 0.5))  # (y, x); resolution is (x, y)
    tifffile.imwrite(tmp_path / "inch.tif", image, resolution=(25400, 12700), resolutionunit="INCH")
    assert physical_size(tmp_path / "inch.tif") == pytest.approx((2.0, 1.0))
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72, 72), resolutionunit="INCH")
    assert physical_size(tmp_path / "dpi.tif") is None  # the placeholder, not a measurement
    (tmp_path / "x.png").write_bytes(b"not read")
    assert physical_size(tmp_path / "x.png") is None and physical_size(tmp_path / "missing.tif") is None


def test_contours_are_geojson_polygons_with_holes_and_classes(tmp_path):
    mask = np.zeros((40, 50), np.uint8)
    mask[5:25, 5:25] = 1
    mask[10:15, 10:15] = 0          # a hole
    mask[30:36, 40:48] = 2
    features = mask_features(mask, CLASS_NAMES)
    assert [f["properties"]["classification"]["name"] for f in features] == ["disc", "square"]
    disc, square = (f["geometry"] for f in features)
    assert disc["type"] == "Polygon" and len(disc["coordinates"]) == 2  # outer ring + the hole
    outer = np.array(disc["coordinates"][0])
    assert outer[0].tolist() == outer[-1].tolist()  # closed ring
    assert outer[:, 0].min() == 5.5 and outer[:, 0].max() == 24.5 and outer[:, 1].max() == 24.5  # pixel centres
    assert np.array(square["coordinates"][0])[:, 0].min() == 40.5
    scaled = mask_features(mask, CLASS_NAMES, scale=(4.0, 2.0))  # a mask at a quarter of the rows, half the columns
    assert np.array(scaled[1]["geometry"]["coordinates"][0]).min(axis=0).tolist() == [81.0, 122.0]
    assert write_geojson(tmp_path / "c.geojson", mask, CLASS_NAMES) == 2
    collection = json.loads((tmp_path / "c.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"] == features
    assert mask_features(np.zeros((4, 4), np.uint8), CLASS_NAMES) == []


def test_overlay_colours(bundle):
    assert parse_colour("green") == COLOURS["green"] and parse_colour(" 1, 2,3") == (1, 2, 3)
    for bad in ("teal", "1,2", "0,0,256", "a,b,c"):
        with pytest.raises(ValueError, match="R,G,B"):
            parse_colour(bad)
    mask = np.zeros((30, 30), np.uint8)
    mask[5:15, 5:15] = 1
    tinted = overlay(np.zeros((30, 30, 3), np.uint8), mask, np.empty((0, 4)), tint=(0, 250, 0))
    assert tinted[10, 10].tolist() == [0, 100, 0]
    # red-dominated training images (fundus) get green; others the red default
    assert default_tint(iterseg.load("drive").bundle) == COLOURS["green"]
    assert default_tint(iterseg.load("ph2").bundle) == (255, 40, 40) == default_tint(bundle)


def test_the_same_ome_tiff_is_written_byte_for_byte_twice(tmp_path):
    """tifffile's OME-XML UUID is random by default; ours comes from the name and shape."""
    def region(level, y, x, h, w):
        return np.full((h, w), 7, np.uint8)
    written = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_pyramid(tmp_path / run / "scan.mask.tif", (600, 700), np.uint8, region, ome=True, pixel_size=(0.5, 0.5))
        written.append((tmp_path / run / "scan.mask.tif").read_bytes())
    assert written[0] == written[1]
    with tifffile.TiffFile(tmp_path / "a" / "scan.mask.tif") as tif:
        assert tif.is_ome and "urn:uuid:" in tif.ome_metadata
