"""``iterseg predict``: the outputs of one image and of several, every option, and the bad-input
matrix: every bad or odd input through the CLI (exit code, one line on stderr) and the API (a specific
exception carrying the same message), or handled with a note in the report."""
import json
import os
import pickle
import struct

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import iterseg
from iterseg import batch
from iterseg.cli import main
from iterseg.disk.images import SUPPORTED
from iterseg.model.store import save_bundle

from synthetic import CLASS_COLOURS, CLASS_NAMES, blob_image, class_pair, multiclass_bundle, small_bundle, write_tiled

OUTPUTS = ("mask.png", "probs.tif", "overlay.png", "report.json")


def test_predict_writes_four_outputs_and_a_summary(tmp_path, image_path, bundle_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(image_path), "--patches", "6", "--model", str(bundle_path), "--out", str(out),
                 "--save-probs"])  # probabilities: only on request
    assert code == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "refined 6" in printed
    for suffix in OUTPUTS:
        assert (out / f"blobs.{suffix}").is_file()
    report = json.loads((out / "blobs.report.json").read_text())
    assert report["image"]["height"] == 96 and report["image"]["width"] == 128
    assert len(report["windows"]) == 6 and report["macs"]["convention"].startswith("fvcore")
    assert set(report["seconds"]) == {"stage1", "select", "stage2", "merge", "total"}
    assert cv2.imread(str(out / "blobs.mask.png"), cv2.IMREAD_UNCHANGED).shape == (96, 128)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_baseline_option_and_quiet(tmp_path, image_path, bundle_path, capsys):
    code = main(["predict", str(image_path), "--baseline", "--quiet", "--model", str(bundle_path),
                 "--out", str(tmp_path)])
    assert code == 0 and capsys.readouterr().out == ""
    assert json.loads((tmp_path / "blobs.report.json").read_text())["macs"]["ratio"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["predict", "missing.png"], "does not exist"),
    (["predict", "IMAGE", "--patches", "-2"], "--patches"),
    (["predict", "IMAGE", "--patches", "many"], "--patches"),
    (["predict", "IMAGE", "--patch-size", "0"], "--patch-size"),
    (["predict", "IMAGE", "--model", "nonexistent"], "valid names"),
    (["predict", "IMAGE", "--score", "margin"], "score must be one of mean, uncertainty"),
    (["predict", "IMAGE", "--stream", "sometimes"], "--stream must be one of auto, always, never"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, image_path, capsys, argv, message):
    argv = [str(image_path) if a == "IMAGE" else a for a in argv] + ["--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("iterseg: error:"), err


def test_cli_precision_option(tmp_path, image_path, bundle_path, capsys):
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--precision", "bf16",
                 "--out", str(tmp_path)]) == 0
    assert "seconds (bf16, " in capsys.readouterr().out
    assert json.loads((tmp_path / "blobs.report.json").read_text())["options"]["precision"] == "bf16"
    assert main(["predict", str(image_path), "--precision", "half", "--out", str(tmp_path)]) == 2
    assert "--precision" in capsys.readouterr().err


def test_round_options_from_the_cli(tmp_path, image_path, bundle_path, capsys):
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(tmp_path), "--quiet",
                 "--patch-size", "16", "--budget", "0.3", "--rounds", "2", "--threshold", "0.45",
                 "--stride", "8", "--max-overlap", "0.25"]) == 0
    report = json.loads((tmp_path / "blobs.report.json").read_text())
    options = report["options"]
    assert options["budget"] == 0.3 and options["rounds"] == 2 and options["threshold"] == 0.45
    assert report["macs"]["ratio"] <= 0.3 and len(options["rounds_log"]) >= 1
    assert "windows refined in 2 round(s)" in report["notes"][-1]
    for bad, words in ((["--budget", "0"], "--budget"), (["--rounds", "0"], "--rounds"),
                       (["--threshold", "2"], "--threshold"), (["--max-overlap", "x"], "--max-overlap")):
        assert main(["predict", str(image_path), "--out", str(tmp_path), *bad]) == 2
        assert words in capsys.readouterr().err


@pytest.mark.parametrize("argv, options", [
    (["--max-overlap", "1"], {"max_overlap": 1.0}),  # argparse took it; the engine refused it later
    (["--max-overlap", "nan"], {"max_overlap": float("nan")}),
    (["--threshold", "1.5"], {"threshold": 1.5}),
    (["--budget", "0"], {"budget": 0.0}),
    (["--budget-gmacs", "inf"], {"budget_gmacs": float("inf")}),
    (["--patches", "-1"], {"patches": -1}),
    (["--patch-size", "0"], {"patch_size": 0}),
    (["--stride", "0"], {"stride": 0}),
    (["--rounds", "0"], {"rounds": 0}),
    (["--context", "-2"], {"context": -2}),
    (["--batch-size", "0"], {"batch_size": 0}),
    (["--score", "loud"], {"score": "loud"}),
])
def test_the_cli_checks_options_with_the_apis_words(tmp_path, image_path, bundle_path, capsys, argv, options):
    """One check for both doors (engine/settings.Settings.check_values): the same one line, the option
    named as each door spells it, exit 2 before any image is read or output folder made."""
    with pytest.raises(iterseg.InputError) as api:
        iterseg.load(str(bundle_path)).predict(str(image_path), **options)
    (name,) = options
    expected = str(api.value).replace(name, "--" + name.replace("_", "-"), 1)
    assert expected.startswith("--")
    out = tmp_path / "out"
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(out), *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [f"iterseg: error: {expected}"]
    assert not out.exists()


@pytest.mark.parametrize("command", [["flops", "--size", "64x64"], ["evaluate", "--spec", "drive"]])
def test_flops_and_evaluate_check_the_window_options_alike(command, capsys):
    assert main([*command, "--patch-size", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["iterseg: error: --patch-size must be an integer >= 1, got 0."]


def test_streamed_images_take_rounds_and_overlapping_windows(tmp_path, bundle_path):
    """Refused before the one loop; now the streamed mask equals the one of the image read whole
    (the engine's equality for every option: tests/engine/test_loop.py)."""
    picture = blob_image(160, 200, seed=3)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(32, 32))
    options = ["--rounds", "2", "--stride", "8", "--patch-size", "32", "--patches", "6", "--model", str(bundle_path),
               "--quiet"]
    assert main(["predict", str(path), "--stream", "always", "--out", str(tmp_path / "s")] + options) == 0
    assert main(["predict", str(path), "--stream", "never", "--out", str(tmp_path / "m")] + options) == 0
    streamed = json.loads((tmp_path / "s" / "t.report.json").read_text())
    memory = json.loads((tmp_path / "m" / "t.report.json").read_text())
    assert streamed["options"]["streamed"] and streamed["options"]["rounds"] == 2 and streamed["options"]["blended"]
    assert [[w[k] for k in "yxhw"] for w in streamed["windows"]] == [[w[k] for k in "yxhw"] for w in memory["windows"]]
    assert len(streamed["options"]["rounds_log"]) == 2
    mask = cv2.imread(str(tmp_path / "m" / "t.mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s" / "t.mask.tif"), mask)


def test_masks_are_byte_identical_across_runs_and_batch_sizes(tmp_path, image_path, bundle_path):
    masks = set()
    for run, batch_size in enumerate((1, 3, 16, 16)):
        out = tmp_path / f"run{run}"
        assert main(["predict", str(image_path), "--patches", "9", "--batch-size", str(batch_size), "--model",
                     str(bundle_path), "--out", str(out), "--quiet"]) == 0
        masks.add((out / "blobs.mask.png").read_bytes())
    assert len(masks) == 1


def test_a_multiclass_model_writes_a_palette_png_and_class_fractions(tmp_path):
    bundle_path = tmp_path / "shapes.pt"
    save_bundle(multiclass_bundle(), bundle_path)
    image, _ = class_pair(64, 96, seed=101)
    Image.fromarray(image).save(tmp_path / "in.png")
    assert main(["predict", str(tmp_path / "in.png"), "--model", str(bundle_path), "--out", str(tmp_path / "out"),
                 "--patches", "4", "--quiet"]) == 0
    mask = Image.open(tmp_path / "out" / "in.mask.png")
    assert mask.mode == "P"
    assert np.asarray(mask.getpalette()[:12]).reshape(4, 3).tolist() == [list(c) for c in CLASS_COLOURS]
    report = json.loads((tmp_path / "out" / "in.report.json").read_text())
    ids = np.asarray(mask)
    np.testing.assert_array_equal(ids, iterseg.load(bundle_path).predict(image, patches=4).mask)
    assert report["class_fractions"] == {n: pytest.approx((ids == i).mean(), abs=1e-6)
                                         for i, n in enumerate(CLASS_NAMES)}
    assert report["options"]["score"] == "uncertainty" and report["model"]["classes"] == list(CLASS_NAMES)


def test_a_streamed_multiclass_mask_holds_the_class_ids_of_the_in_memory_one(tmp_path):
    bundle_path = tmp_path / "shapes.pt"
    save_bundle(multiclass_bundle(), bundle_path, half=False)
    image, _ = class_pair(128, 192, seed=102)
    write_tiled(tmp_path / "big.tif", image, tile=(32, 32))
    assert main(["predict", str(tmp_path / "big.tif"), "--model", str(bundle_path), "--stream", "always",
                 "--patches", "4", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    streamed = tifffile.imread(tmp_path / "out" / "big.mask.tif")
    in_memory = iterseg.load(bundle_path).predict(image, patches=4)
    assert streamed.dtype == np.uint8
    np.testing.assert_array_equal(streamed, in_memory.mask)
    report = json.loads((tmp_path / "out" / "big.report.json").read_text())
    assert report["options"]["score"] == "uncertainty" and "class_fractions" not in report


# ---- the bad-input matrix ------------------------------------------------------------------------

RGB = blob_image(64, 80, seed=1)


def _huge_header_tiff(path):
    """A 16 x 16 TIFF whose header is patched to declare 200000 x 200000 pixels."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(path) as tif:
        offsets = [tif.pages[0].tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset:offset + 4] = struct.pack("<I", 200_000)
    path.write_bytes(bytes(data))


def _truncated(path, writer):
    writer(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch RAN_CODE",))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every bad or odd file of the matrix, by name."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "folder.png").mkdir()
    (d / "empty.png").write_bytes(b"")
    _truncated(d / "cut.png", lambda p: cv2.imwrite(str(p), RGB))
    _truncated(d / "cut.jpg", lambda p: cv2.imwrite(str(p), RGB))
    _truncated(d / "cut.tif", lambda p: tifffile.imwrite(p, RGB))
    (d / "text.png").write_text("this is not a PNG")
    cv2.imwrite(str(d / "one.png"), RGB[:1, :1])
    cv2.imwrite(str(d / "small.png"), RGB[:12, :10])
    cv2.imwrite(str(d / "thin.png"), np.tile(RGB[:1], (1, 63, 1))[:, :5000])
    tifffile.imwrite(d / "u16.tif", RGB.astype(np.uint16) * 257)
    tifffile.imwrite(d / "f32.tif", RGB.astype(np.float32) / 255, photometric="rgb")
    tifffile.imwrite(d / "f255.tif", RGB.astype(np.float32), photometric="rgb")
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = RGB.astype(np.float32) / 255
        bad[3, 4, 0] = value
        tifffile.imwrite(d / f"{name}.tif", bad, photometric="rgb")
    cv2.imwrite(str(d / "gray.png"), RGB[:, :, 0])
    cv2.imwrite(str(d / "rgba.png"), np.dstack([RGB, np.full(RGB.shape[:2], 200, np.uint8)]))
    Image.fromarray(RGB).convert("P").save(d / "palette.png")
    tifffile.imwrite(d / "two.tif", RGB[:, :, :2])
    tifffile.imwrite(d / "five.tif", np.dstack([RGB, RGB[:, :, :2]]))
    _huge_header_tiff(d / "huge.tif")
    save_bundle(small_bundle(), d / "small.pt", half=False)
    save_bundle(small_bundle(in_channels=2), d / "two_channel.pt", half=False)
    _truncated(d / "cut.pt", lambda p: save_bundle(small_bundle(), p))
    payload = torch.load(d / "small.pt", weights_only=True)
    meta = json.loads(payload["meta"])
    meta["s2"]["depth"] = 3
    payload["meta"] = json.dumps(meta)
    torch.save(payload, d / "other_arch.pt")
    with open(d / "runs_code.pt", "wb") as handle:
        pickle.dump({"format": "iterseg-bundle", "x": _RunsCode()}, handle)
    return d


def cli_error(argv, capsys):
    """(exit code, the one error line without its 'iterseg: error: ' prefix); the random-weights
    warning of the test bundles may come before it."""
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and not line.startswith("iterseg: warning: model 'untrained'")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("iterseg: error: ")
    return code, lines[0][len("iterseg: error: "):]


REFUSED_FILES = [  # file, words the message must contain (what is wrong and what to do)
    ("missing.png", ["does not exist", "check the path"]),
    ("folder.png", ["holds no image files"]),
    ("empty.png", ["is empty", "re-export"]),
    ("cut.png", ["PNG", "is truncated", "export it again"]),
    ("cut.jpg", ["truncated", "export it again"]),
    ("cut.tif", ["cannot read TIFF", "complete"]),
    ("text.png", ["cannot decode", "PNG, JPEG"]),
    ("nan.tif", ["NaN or infinite", "nan_to_num"]),
    ("inf.tif", ["NaN or infinite", "nan_to_num"]),
    ("five.tif", ["5 channels", "transpose"]),
    ("huge.tif", ["200000 x 200000", "tiled TIFF"]),
]


@pytest.mark.parametrize("name, words", REFUSED_FILES)
def test_bad_image_files_are_refused(inputs, tmp_path, capsys, name, words):
    path = inputs / name
    code, message = cli_error(["predict", str(path), "--model", str(inputs / "small.pt"),
                               "--out", str(tmp_path)], capsys)
    assert code == 2 and all(word in message for word in words), message
    with pytest.raises(iterseg.InputError) as api:  # the API of a run: expand the inputs, predict each
        batch.predict_file(iterseg.load(inputs / "small.pt"), batch.expand_inputs([path])[0], tmp_path, {})
    assert str(api.value) == message
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial file


HANDLED_FILES = [  # file, a note the report must carry ('' = none needed)
    ("one.png", "grid has only 1 windows"),
    ("small.png", "patches asked, the grid has only"),
    ("thin.png", ""),
    ("u16.tif", "uint16 image scaled by 1/65535"),
    ("f32.tif", ""),
    ("f255.tif", "float32 image with values in [0, 200] clipped to [0, 1]"),
    ("gray.png", "grayscale image repeated to 3 channels"),
    ("rgba.png", "alpha channel dropped"),
    ("palette.png", ""),
    ("two.tif", "(alpha dropped)"),
]


@pytest.mark.parametrize("name, note", HANDLED_FILES)
def test_odd_images_are_handled_and_the_report_says_how(inputs, tmp_path, name, note):
    assert main(["predict", str(inputs / name), "--model", str(inputs / "small.pt"), "--out", str(tmp_path),
                 "--quiet"]) == 0
    report = json.loads((tmp_path / f"{inputs.joinpath(name).stem}.report.json").read_text())
    assert not note or any(note in n for n in report["notes"]), report["notes"]
    image = cv2.imread(str(tmp_path / f"{inputs.joinpath(name).stem}.mask.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (report["image"]["height"], report["image"]["width"])


def test_a_channel_count_the_model_cannot_take(inputs, tmp_path, capsys):
    code, message = cli_error(["predict", str(inputs / "gray.png"), "--model", str(inputs / "two_channel.pt"),
                               "--out", str(tmp_path)], capsys)
    assert code == 2 and message.endswith("gray.png: image has 1 channels but the model takes 2; convert the image "
                                          "or use a model trained for this channel count."), message
    with pytest.raises(iterseg.InputError, match="the model takes 2"):
        iterseg.load(inputs / "two_channel.pt").predict(RGB)


BAD_OPTIONS = [  # CLI arguments, API keyword arguments, words of both messages
    (["--patches", "-1"], {"patches": -1}, ["patches", ">= 0"]),
    (["--patches", "many"], {"patches": "many"}, ["patches", "'many'"]),
    (["--patch-size", "0"], {"patch_size": 0}, ["patch", ">= 1"]),
    (["--patch-size", "-3"], {"patch_size": -3}, ["patch", ">= 1"]),
    (["--batch-size", "0"], {"batch_size": 0}, ["batch", ">= 1"]),
    (["--stride", "0"], {"stride": 0}, ["stride", ">= 1"]),
]


@pytest.mark.parametrize("argv, kwargs, words", BAD_OPTIONS)
def test_bad_options_are_refused(inputs, tmp_path, capsys, argv, kwargs, words):
    code, message = cli_error(["predict", str(inputs / "one.png"), "--model", str(inputs / "small.pt"),
                               "--out", str(tmp_path), *argv], capsys)
    assert code == 2 and all(word in message for word in words), message
    with pytest.raises(iterseg.InputError) as api:
        iterseg.load(inputs / "small.pt").predict(RGB, **kwargs)
    assert all(word in str(api.value) for word in words), str(api.value)


def test_more_patches_than_windows_refines_all_and_says_so(inputs):
    result = iterseg.load(inputs / "small.pt").predict(RGB, patches=500, patch_size=16)
    assert len(result.windows) == 4 * 5
    assert any("500 patches asked, the grid has only 20 windows" in note for note in result.notes)


def test_output_folders_that_cannot_be_used(inputs, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out, words in ((blocker / "sub", "cannot create output folder"), ("/proc/iterseg-out", "cannot create")):
        code, message = cli_error(["predict", str(inputs / "one.png"), "--out", str(out)], capsys)
        assert code == 2 and words in message and "--out" in message
        with pytest.raises(iterseg.InputError, match=words):
            batch.output_folder(out)
    monkeypatch.setattr(batch.os, "access", lambda *args: False)  # root ignores permission bits
    code, message = cli_error(["predict", str(inputs / "one.png"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "is not writable" in message


BAD_MODELS = [
    ("no_such_model", iterseg.ModelError, ["unknown model", "valid names: drive, hrf, ph2, untrained"]),
    ("cut.pt", iterseg.ModelError, ["not a readable iterseg model bundle"]),
    ("other_arch.pt", iterseg.ModelError, ["do not fit the architecture", "re-export"]),
    ("runs_code.pt", iterseg.ModelError, ["refused to load", "nothing was run"]),
    ("missing.pt", iterseg.ModelError, ["does not exist"]),
]


@pytest.mark.parametrize("name, error, words", BAD_MODELS)
def test_bad_models_are_refused(inputs, tmp_path, capsys, monkeypatch, name, error, words):
    monkeypatch.chdir(tmp_path)
    model = name if "." not in name else str(inputs / name)
    code, message = cli_error(["predict", str(inputs / "one.png"), "--model", model, "--out", str(tmp_path)], capsys)
    assert code == 2 and all(word in message for word in words), message
    with pytest.raises(error) as api:
        iterseg.load(model)
    assert str(api.value) == message
    assert not (tmp_path / "RAN_CODE").exists()


def test_debug_shows_the_traceback(inputs, tmp_path, capsys):
    assert main(["--debug", "predict", str(inputs / "text.png"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().endswith(f"iterseg reads {SUPPORTED} files.")
