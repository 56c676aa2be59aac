"""The bad-input matrix: every case through the CLI (exit code, one line on stderr) and the API
(a specific exception type carrying the same message), or handled with a note in the report."""
import io
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
from iterseg import files
from iterseg.cli import main
from iterseg.model.store import save_bundle

from synthetic import blob_image, small_bundle

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
    ("cut.png", ["cannot decode"]),
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
        files.predict_file(iterseg.load(inputs / "small.pt"), files.expand_inputs([path])[0], tmp_path, {})
    assert str(api.value) == message
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial file


HANDLED_FILES = [  # file, a note the report must carry ('' = none needed)
    ("one.png", "grid has only 1 windows"),
    ("small.png", "patches asked, the grid has only"),
    ("thin.png", ""),
    ("u16.tif", "uint16 image scaled by 1/65535"),
    ("f32.tif", ""),
    ("f255.tif", "read as 0-255 data"),
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
    assert code == 2 and "3 channels but the model takes 2" in message or "1 channels" in message
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
    assert len(result.windows) == 4 * 5 and "500 patches asked, the grid has only 20 windows" in result.notes[0]


def test_output_folders_that_cannot_be_used(inputs, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out, words in ((blocker / "sub", "cannot create output folder"), ("/proc/iterseg-out", "cannot create")):
        code, message = cli_error(["predict", str(inputs / "one.png"), "--out", str(out)], capsys)
        assert code == 2 and words in message and "--out" in message
        with pytest.raises(iterseg.InputError, match=words):
            files.output_folder(out)
    monkeypatch.setattr(files.os, "access", lambda *args: False)  # root ignores permission bits
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
    assert "Traceback (most recent call last)" in err and err.strip().endswith("PNG, JPEG, BMP, GIF, PPM/PGM or TIFF files.")
