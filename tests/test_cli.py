"""The command line, in process (``main``) and as the installed ``iterseg`` command."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from iterseg.cli import main

OUTPUTS = ("mask.png", "probs.tif", "overlay.png", "report.json")


def test_predict_writes_four_outputs_and_a_summary(tmp_path, image_path, bundle_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(image_path), "--patches", "6", "--model", str(bundle_path), "--out", str(out)])
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


def test_flops_prints_the_cost_table(capsys):
    assert main(["flops", "--size", "2048x2048", "--patches", "16", "--model", "untrained"]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "7.81 %" in out and "1 multiply-accumulate = 1 flop" in out  # 1/64 + 1/16
    # the default model's S2 also takes the stage-1 probability, and its baseline is stage 1 plus that
    # S2 over the whole image: (S1 + 16 windows) / (S1 + the whole image), all at 4 input channels
    assert main(["flops", "--size", "2048x2048", "--patches", "16"]) == 0
    assert "ratio             7.69 %" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["predict", "missing.png"], "does not exist"),
    (["predict", "IMAGE", "--patches", "-2"], "--patches"),
    (["predict", "IMAGE", "--patches", "many"], "--patches"),
    (["predict", "IMAGE", "--patch-size", "0"], "--patch-size"),
    (["predict", "IMAGE", "--model", "nonexistent"], "valid names"),
    (["flops", "--size", "big"], "HEIGHTxWIDTH"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, image_path, capsys, argv, message):
    argv = [str(image_path) if a == "IMAGE" else a for a in argv] + (["--out", str(tmp_path)] if argv[0] == "predict" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("iterseg: error:")


def test_output_folder_that_cannot_be_created(tmp_path, image_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    assert main(["predict", str(image_path), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot create output folder" in err and "--out" in err


def test_help_shows_an_example(capsys):
    assert main(["predict", "--help"]) == 0
    assert "iterseg predict image.png --patches 16" in capsys.readouterr().out


def test_installed_command_runs(tmp_path, image_path, bundle_path):
    command = Path(sys.executable).with_name("iterseg")
    assert command.is_file(), "the iterseg console script is not installed next to this Python"
    done = subprocess.run([str(command), "predict", str(image_path), "--model", str(bundle_path),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all((tmp_path / "o" / f"blobs.{s}").is_file() for s in OUTPUTS)
