"""The command line as a whole: ``main(argv) -> int``, exit codes (0 ok, 2 bad input or usage with one
line on stderr, 1 internal error, 130 interrupted), --help and --version without torch, and the
installed ``iterseg`` command."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import iterseg
from iterseg import batch
from iterseg.cli import main
from iterseg.cli import models as models_command

from synthetic import blob_image

OUTPUTS = ("mask.png", "overlay.png", "report.json")  # the probabilities only with --save-probs


@pytest.mark.parametrize("argv, message", [
    (["flops", "--size", "big"], "HEIGHTxWIDTH"),
    (["frobnicate"], "invalid choice"),
    ([], "required: command"),
    (["predict"], "the following arguments are required: IMAGE"),
])
def test_bad_usage_exits_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("iterseg: error:"), err


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("predict", "flops", "models", "train", "evaluate", "quantize"))
    assert main(["predict", "--help"]) == 0
    assert "iterseg predict image.png --patches 16" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"iterseg {iterseg.__version__}"


def test_the_parser_is_built_without_torch_or_numpy():
    code = ("import sys; from iterseg.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'numpy', 'cv2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_a_bug_exits_1_and_says_how_to_see_it(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(models_command, "run", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("iterseg: internal error: RuntimeError: something inside broke (rerun with --debug for "
                           "the traceback and report it)")
    assert main(["--debug", "models"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_sigterm_during_a_folder_run_keeps_finished_outputs(tmp_path, bundle_path, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), blob_image(48, 48, seed=i))
    real, seen = batch.predict_file, []

    def terminated_on_second(*args, **kwargs):
        seen.append(args[1])
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a job scheduler stops the run
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "predict_file", terminated_on_second)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "img0.report.json").is_file() and not list(out.glob("img1.*"))
    assert not [p for p in out.iterdir() if ".partial" in p.name or ".claim" in p.name]  # nothing left behind
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    monkeypatch.setattr(batch, "predict_file", real)
    assert main(["predict", str(folder), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 0
    assert len(list(out.glob("*.report.json"))) == 3


def test_the_installed_command_answers_quickly():
    command = Path(sys.executable).with_name("iterseg")
    assert command.is_file(), "the iterseg console script is not installed next to this Python"
    done = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"iterseg {iterseg.__version__}", done.stderr


@pytest.mark.slow
def test_installed_command_runs(tmp_path, image_path, bundle_path):
    command = Path(sys.executable).with_name("iterseg")
    assert command.is_file(), "the iterseg console script is not installed next to this Python"
    done = subprocess.run([str(command), "predict", str(image_path), "--model", str(bundle_path),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all((tmp_path / "o" / f"blobs.{s}").is_file() for s in OUTPUTS)
    assert not (tmp_path / "o" / "blobs.probs.tif").exists()

