"""``iterseg predict`` output options: probabilities only on request, OME-TIFF outputs of streamed
images with the input's pixel size, contours as GeoJSON, overlay colour, cut-off and clean-up, and
the cost warning; each checked in the files written."""
import json

import cv2
import numpy as np
import tifffile

from iterseg.batch import output_paths
from iterseg.cli import main
from iterseg.disk.pyramid import write_pyramid

from synthetic import blob_image


def run(tmp_path, image_path, bundle_path, *extra):
    out = tmp_path / "out"
    code = main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(out), "--overwrite", *extra])
    return code, out


def test_probabilities_are_written_only_when_asked_for(tmp_path, image_path, bundle_path):
    assert "probs" not in output_paths(tmp_path, "a", False, False)
    assert "probs" in output_paths(tmp_path, "a", True, True)
    code, out = run(tmp_path, image_path, bundle_path, "--patches", "2", "--quiet")
    assert code == 0 and not (out / "blobs.probs.tif").exists() and (out / "blobs.mask.png").exists()
    code, out = run(tmp_path, image_path, bundle_path, "--patches", "2", "--quiet", "--save-probs")
    with tifffile.TiffFile(out / "blobs.probs.tif") as tif:
        assert code == 0 and tif.is_ome and tif.asarray().shape == (96, 128)


def test_cutoff_clean_up_contours_and_overlay_colour(tmp_path, image_path, bundle_path):
    code, out = run(tmp_path, image_path, bundle_path, "--patches", "2", "--quiet", "--save-probs", "--cutoff", "0.55")
    probs = tifffile.imread(out / "blobs.probs.tif")
    mask = cv2.imread(str(out / "blobs.mask.png"), cv2.IMREAD_UNCHANGED)
    assert code == 0 and 0 < (probs >= 0.55).mean() < 1
    np.testing.assert_array_equal(mask, np.where(probs >= 0.55, 255, 0))
    code, out = run(tmp_path, image_path, bundle_path, "--patches", "2", "--quiet", "--save-probs", "--cutoff", "0.55",
                    "--min-size", "30", "--fill-holes", "--geojson", "--overlay-colour", "0,0,255")
    assert code == 0
    report = json.loads((out / "blobs.report.json").read_text())
    assert report["options"]["cutoff"] == 0.55 and report["options"]["min_size"] == 30
    assert report["outputs"]["contours"] == str(out / "blobs.contours.geojson")
    assert any("smaller than 30 px" in note for note in report["notes"])
    probs = tifffile.imread(out / "blobs.probs.tif")
    mask = cv2.imread(str(out / "blobs.mask.png"), cv2.IMREAD_UNCHANGED) // 255
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert count > 1 and stats[1:, cv2.CC_STAT_AREA].min() >= 30  # no region under 30 px is left
    features = json.loads((out / "blobs.contours.geojson").read_text())["features"]
    assert len(features) >= 1 and features[0]["properties"]["classification"]["name"] == "foreground"
    rgb = cv2.imread(str(out / "blobs.overlay.png"))[:, :, ::-1]
    inside = (mask > 0) & (cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    assert inside.any() and (rgb[inside][:, 2] > rgb[inside][:, 0]).all()  # tinted blue, not red


def test_bad_output_options_are_usage_errors(tmp_path, image_path, bundle_path, capsys):
    for extra in (["--overlay-colour", "teal"], ["--cutoff", "1.5"], ["--cutoff", "0"], ["--min-size", "-2"]):
        code, _ = run(tmp_path, image_path, bundle_path, *extra)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, (extra, err)


def test_a_streamed_image_gets_ome_tiffs_with_its_pixel_size(tmp_path, bundle_path, capsys):
    picture = blob_image(600, 520, seed=4)
    path = tmp_path / "scan.tif"
    write_pyramid(path, picture.shape, picture.dtype, lambda level, y, x, h, w: picture[y:y + h, x:x + w],
                  tile=(64, 64), levels=1, ome=True, pixel_size=(0.46, 0.46))
    out = tmp_path / "out"
    common = ["predict", str(path), "--model", str(bundle_path), "--out", str(out), "--stream", "always", "--quiet",
              "--overwrite", "--patches", "2"]
    assert main(common + ["--min-size", "10"]) == 2
    assert "need the whole mask in memory" in capsys.readouterr().err
    assert main(common + ["--save-probs", "--geojson"]) == 0
    for name in ("scan.mask.tif", "scan.probs.tif"):
        with tifffile.TiffFile(out / name) as tif:
            assert tif.is_ome and len(tif.series[0].levels) >= 2 and tif.series[0].levels[0].shape == (600, 520)
            assert 'PhysicalSizeX="0.46"' in tif.ome_metadata and 'PhysicalSizeY="0.46"' in tif.ome_metadata
    report = json.loads((out / "scan.report.json").read_text())
    assert any("contours traced on the" in note for note in report["notes"])
    for feature in json.loads((out / "scan.contours.geojson").read_text())["features"]:
        points = np.concatenate([np.array(ring) for ring in feature["geometry"]["coordinates"]])
        assert points.min() >= 0 and points[:, 0].max() <= 520 and points[:, 1].max() <= 600


def test_a_refinement_dearer_than_the_baseline_warns_and_the_baseline_summary(tmp_path, image_path, bundle_path,
                                                                              capsys):
    code, _ = run(tmp_path, image_path, bundle_path, "--patches", "40", "--patch-size", "64", "--stride", "16",
                  "--max-overlap", "0.9")
    captured = capsys.readouterr()
    assert code == 0 and "of the full-resolution model's MACs" in captured.out and "--baseline" in captured.err
    code, _ = run(tmp_path, image_path, bundle_path, "--baseline")
    printed = capsys.readouterr().out
    assert code == 0 and "baseline: the full-resolution model over the whole image" in printed
    assert "None px" not in printed
