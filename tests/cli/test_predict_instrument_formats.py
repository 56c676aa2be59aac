"""``iterseg predict`` on whole-slide images and GeoTIFFs as instruments write them: a slide streams
(stage 1 from its own pyramid level, stage 2 from the level-0 tiles under the windows), its MPP and
objective power reach the report and the mask OME-TIFF; folders take the slide suffixes; a GeoTIFF's
mask carries the input's georeferencing tags; an OME-Zarr's mask is an NGFF labels group; a bad slide
is one line, exit 2, nothing written."""
import json

import numpy as np
import pytest
import tifffile

from iterseg.cli import main
from iterseg.disk.metadata import GEOTIFF_TAGS

from synthetic import blob_image, write_ngff, write_slide

GEOTAGS = [(33550, 12, 3, (0.5, 0.5, 0.0), True), (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4200000.0, 0.0), True),
           (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
           (34737, 2, 0, "WGS 84 / UTM zone 33N|", True)]


def predict(tmp_path, inputs, bundle_path, *extra):
    out = tmp_path / "out"
    code = main(["predict", *map(str, inputs), "--model", str(bundle_path), "--out", str(out), "--quiet", *extra])
    return code, out


def tiles_under(windows, tile, margin=8):
    """Level-0 tiles under the windows, window by window (a tile under two is read twice), each
    window grown by ``margin`` px (the size multiple's rounding)."""
    count = 0
    for w in windows:
        y0, x0 = max(0, w["y"] - margin) // tile, max(0, w["x"] - margin) // tile
        y1, x1 = (w["y"] + w["h"] + margin - 1) // tile, (w["x"] + w["w"] + margin - 1) // tile
        count += (y1 - y0 + 1) * (x1 - x0 + 1)
    return count


def test_a_slide_streams_from_its_pyramid_and_keeps_its_pixel_size(tmp_path, bundle_path):
    slide = tmp_path / "scan.svs"
    write_slide(slide, blob_image(600, 800, seed=4), tile=(64, 64), mpp=0.499, compression="jpeg")
    code, out = predict(tmp_path, [slide], bundle_path, "--patches", "2", "--patch-size", "32")
    report = json.loads((out / "scan.report.json").read_text())
    assert code == 0 and report["options"]["streamed"]
    assert report["image"]["mpp"] == [0.499, 0.499] and report["image"]["objective_power"] == 20
    assert "stage 1 read pyramid level 1 (12 tiles; 100 x 75 after INTER_AREA)" in report["notes"]  # 150 x 200: 3 x 4
    assert 0 < report["tiles_read"] <= tiles_under(report["windows"], 64) < 10 * 13  # never all of level 0
    with tifffile.TiffFile(out / "scan.mask.tif") as tif:
        pixels = tif.ome_metadata.split("<Pixels ")[1]
        assert tif.is_ome and tif.series[0].shape == (600, 800)
    assert 'PhysicalSizeX="0.499"' in pixels and 'PhysicalSizeY="0.499"' in pixels


def test_folders_take_slides_and_a_bad_slide_is_one_failed_row(tmp_path, bundle_path, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    write_slide(folder / "good.svs", blob_image(200, 240, seed=5), tile=(64, 64))
    (folder / "broken.ndpi").write_bytes(b"II*\x00 not really a slide")
    code, out = predict(tmp_path, [folder], bundle_path, "--patches", "1")
    err = capsys.readouterr().err.strip().splitlines()
    summary = (out / "summary.csv").read_text()
    assert code == 2 and "good.svs,done" in summary and "broken.ndpi,failed" in summary
    assert sum("broken.ndpi" in line for line in err) == 1 and not list(out.glob("broken.*"))
    code, alone = predict(tmp_path / "one", [folder / "broken.ndpi"], bundle_path)  # a single file: the run's error
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot read slide" in err[0] and not list(alone.iterdir())


def test_a_geotiff_mask_carries_the_georeferencing(tmp_path, bundle_path):
    for name, extra in (("small.tif", {}), ("tiled.tif", {"tile": (64, 64)})):
        tifffile.imwrite(tmp_path / name, blob_image(128, 160, seed=6), photometric="rgb", extratags=GEOTAGS, **extra)
        code, out = predict(tmp_path, [tmp_path / name], bundle_path, "--patches", "1",
                            *(["--stream", "always"] if extra else []))
        stem = name.split(".")[0]
        report = json.loads((out / f"{stem}.report.json").read_text())
        assert code == 0 and report["image"]["georeferenced"] and report["outputs"]["mask"].endswith(".mask.tif")
        with tifffile.TiffFile(out / f"{stem}.mask.tif") as tif:
            tags = tif.pages.first.tags
            assert tif.pages.first.shape == (128, 160) and np.isin(tif.pages.first.asarray(), (0, 255)).all()
            for code_, _, _, value, _ in GEOTAGS:
                assert code_ in GEOTIFF_TAGS and tags[code_].value == value
            assert tif.geotiff_metadata["GTModelTypeGeoKey"] == 1  # projected, as written


def test_an_ome_zarr_gives_ngff_labels_and_folders_take_it(tmp_path, bundle_path):
    pytest.importorskip("ome_zarr")
    from iterseg.disk.ngff import read_labels
    folder = tmp_path / "zarrs"
    folder.mkdir()
    write_ngff(folder / "cells.ome.zarr", blob_image(256, 320, seed=8), chunk=64, mpp=0.5)
    code, out = predict(tmp_path, [folder], bundle_path, "--patches", "2", "--patch-size", "32")
    report = json.loads((out / "cells.ome.report.json").read_text())
    labels, metadata = read_labels(out / "cells.ome.mask.zarr")
    assert code == 0 and report["options"]["streamed"] and report["image"]["mpp"] == [0.5, 0.5]
    assert labels.shape == (256, 320) and set(np.unique(labels)) <= {0, 1} and metadata["name"] == "mask"
    assert report["foreground_fraction"] == pytest.approx(labels.mean())
    assert 0 < report["tiles_read"] <= tiles_under(report["windows"], 64) < 4 * 5
    code = main(["predict", str(folder), "--model", str(bundle_path), "--out", str(folder), "--quiet"])
    rows = (folder / "summary.csv").read_text().splitlines()[1:]  # our .mask.zarr there is not an input
    assert code == 0 and len(rows) == 1 and rows[0].startswith(f"{folder / 'cells.ome.zarr'},done")


def test_the_api_streams_a_slide_too(tmp_path, bundle_path):
    import iterseg
    write_slide(tmp_path / "scan.svs", blob_image(300, 400, seed=9), tile=(64, 64))
    segmenter = iterseg.load(bundle_path)
    result = segmenter.predict_tiled(tmp_path / "scan.svs", patches=2, patch_size=32)
    assert result.options["streamed"] and 0 < result.tiles_read <= 2 * 4
    assert result.mask_at(np.arange(0, 300, 50), np.arange(0, 400, 50)).shape == (6, 8)
    whole = segmenter.predict(tmp_path / "scan.svs", patches=2, patch_size=32)  # level 0 read whole
    assert whole.mask.shape == (300, 400) and "whole-slide image: level 0 read whole" in whole.notes


def test_a_scanner_slide_renamed_tif_keeps_its_mpp(tmp_path, bundle_path):
    write_slide(tmp_path / "renamed.tif", blob_image(200, 240, seed=10), tile=(64, 64), mpp=0.2527)
    code, out = predict(tmp_path, [tmp_path / "renamed.tif"], bundle_path, "--patches", "1", "--stream", "always")
    report = json.loads((out / "renamed.report.json").read_text())
    assert code == 0 and report["image"]["mpp"] == [0.2527, 0.2527] and report["image"]["vendor"] == "aperio"
    with tifffile.TiffFile(out / "renamed.mask.tif") as tif:
        assert 'PhysicalSizeX="0.2527"' in tif.ome_metadata


@pytest.fixture
def model_at_1um(tmp_path, bundle):
    """The small bundle declaring it was trained at 1 µm per pixel (a 10x model)."""
    import dataclasses

    from iterseg.model.store import save_bundle
    path = tmp_path / "at1um.pt"
    save_bundle(dataclasses.replace(bundle, mpp=1.0), path, half=False)
    return path


def test_a_model_trained_at_a_coarser_pixel_size_runs_at_the_matching_slide_level(tmp_path, model_at_1um):
    write_slide(tmp_path / "scan.svs", blob_image(600, 800, seed=4), tile=(64, 64), mpp=0.25)  # levels: 1, 1/4, 1/16
    code, out = predict(tmp_path, [tmp_path / "scan.svs"], model_at_1um, "--patches", "2", "--patch-size", "32")
    report = json.loads((out / "scan.report.json").read_text())
    assert code == 0 and report["image"]["mpp"] == [1.0, 1.0] and report["model"]["mpp"] == 1.0
    assert any(note.startswith("model trained at 1 µm per pixel: ran on pyramid level 1, 200 x 150 px")
               for note in report["notes"])
    assert "stage 1 read pyramid level 2 (1 tiles; 25 x 19 after INTER_AREA)" in report["notes"]
    assert 0 < report["tiles_read"] <= 2 * 4  # level-1 tiles (64 px) under two 32-px windows with their margin
    with tifffile.TiffFile(out / "scan.mask.tif") as tif:
        assert tif.series[0].shape == (150, 200) and 'PhysicalSizeX="1.0"' in tif.ome_metadata
    code, native = predict(tmp_path / "native", [tmp_path / "scan.svs"], model_at_1um, "--patches", "1",
                           "--resolution", "native")
    report = json.loads((native / "scan.report.json").read_text())
    assert code == 0 and report["image"]["mpp"] == [0.25, 0.25]
    assert not any(note.startswith("model trained at") for note in report["notes"])
    with tifffile.TiffFile(native / "scan.mask.tif") as tif:
        assert tif.series[0].shape == (600, 800)


def test_an_image_read_whole_is_resized_to_the_model_pixel_size(tmp_path, model_at_1um):
    import iterseg
    tifffile.imwrite(tmp_path / "cells.ome.tif", blob_image(200, 240, seed=3), photometric="rgb",
                     metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    segmenter = iterseg.load(model_at_1um)
    result = segmenter.predict(tmp_path / "cells.ome.tif", patches=1)
    assert result.mask.shape == (100, 120)
    assert any("level 0 resampled (INTER_AREA), 120 x 100 px at 1 µm" in note for note in result.notes)
    assert segmenter.predict(tmp_path / "cells.ome.tif", patches=1, resolution="native").mask.shape == (200, 240)
    assert segmenter.predict(blob_image(200, 240, seed=3), patches=1).mask.shape == (200, 240)  # an array: as given
    with pytest.raises(iterseg.InputError, match="resolution must be one of model, native"):
        segmenter.predict(tmp_path / "cells.ome.tif", resolution="level0")


def test_a_geotiff_is_never_resampled_so_its_georeferencing_stays_true(tmp_path, model_at_1um):
    tifffile.imwrite(tmp_path / "field.tif", blob_image(120, 160, seed=2), photometric="rgb", extratags=GEOTAGS,
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # 0.5 µm per pixel by its tags
    code, out = predict(tmp_path, [tmp_path / "field.tif"], model_at_1um, "--patches", "1")
    report = json.loads((out / "field.report.json").read_text())
    assert code == 0 and report["image"]["georeferenced"]
    assert not any(note.startswith("model trained at") for note in report["notes"])
    with tifffile.TiffFile(out / "field.mask.tif") as tif:
        assert tif.pages[0].shape[:2] == (120, 160)
