"""``iterseg train``: both stages into a bundle that predicts, resuming, a multi-class spec, and a
conditioned S2 trained from a bundle (tiny networks, a few steps: about a second each)."""
import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.cli.train import train_options
from iterseg.model.store import read_bundle, save_bundle

from synthetic import CLASS_COLOURS, CLASS_NAMES, blob_image, class_pair, write_dataset, write_multiclass_dataset

TINY = ["--epochs", "2", "--steps", "3", "--batch-size", "2", "--width", "4", "--depth", "2", "--crop", "32",
        "--no-bf16", "--quiet"]


@pytest.mark.slow  # seconds of training or a MONAI import: make test-slow / CI
def test_cli_trains_both_stages_into_a_usable_bundle_and_resumes(tmp_path, capsys):
    spec_path = write_dataset(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--spec", str(spec_path), "--data-root", str(tmp_path), "--stage", "both", "--out", str(out),
            "--epochs", "2", "--steps", "2", "--batch-size", "2", "--width", "4", "--depth", "2", "--crop", "32",
            "--no-bf16", "--quiet"]
    assert main(argv) == 0
    assert "bundle written" in capsys.readouterr().out
    seg = iterseg.load(out / "syn.pt")
    assert seg.bundle.provenance["dataset"] == "syn" and not seg.bundle.untrained
    # the window side: a 16 x 16 grid on the median training image, at most the largest S2 crop (32)
    shape = json.loads((out / "s2" / "summary.json").read_text())["image_shape"]
    multiple = seg.bundle.s2.config.size_multiple
    side = math.ceil(max(shape) / 16)
    assert seg.bundle.window == min(math.ceil(side / multiple) * multiple, 32)
    default = seg.bundle.provenance["default"]  # measured on the validation images (training/defaults.py)
    assert (seg.bundle.patches, seg.bundle.context) == (default["patches"], default["context"])
    assert default["measured"].startswith("on ") and str(default["context"]) in default["curves"]
    # the scale the masks ask for (training/scale.py): these small discs keep Dice 0.944 through 1/8 and
    # 0.985 through 1/4, so 1/4 (KEEP 0.97); --width 4 as given
    assert seg.bundle.s1_scale == 0.25
    result = seg.predict(np.zeros((40, 56, 3), np.uint8), patches=2)
    assert result.mask.shape == (40, 56)
    argv[argv.index("--epochs") + 1] = "3"
    argv[argv.index("both")] = "s2"
    assert main(argv + ["--resume"]) == 0
    with open(out / "s2" / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.slow  # seconds of training: make test-slow / CI
def test_a_multiclass_spec_trains_a_bundle_with_its_classes_and_colours(tmp_path):
    spec_path = write_multiclass_dataset(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--spec", str(spec_path), "--data-root", str(tmp_path), "--stage", "both",
                 "--out", str(out)] + TINY) == 0
    segmenter = iterseg.load(out / "shapes.pt")
    assert segmenter.bundle.class_names == CLASS_NAMES and segmenter.bundle.palette == CLASS_COLOURS
    assert segmenter.bundle.s1.config.out_channels == segmenter.bundle.s2.config.out_channels == 4
    image, _ = class_pair(64, 96, seed=100)
    result = segmenter.predict(image, patches=4)
    assert result.probs.shape == (4, 64, 96) and result.options["score"] == "uncertainty"
    np.testing.assert_allclose(result.probs.sum(axis=0), 1, atol=1e-5)


@pytest.mark.slow  # seconds of training or a MONAI import: make test-slow / CI
def test_training_a_conditioned_s2_from_a_bundle(tmp_path, capsys):
    spec_path = write_dataset(tmp_path)
    common = ["--spec", str(spec_path), "--data-root", str(tmp_path), "--epochs", "1", "--steps", "2",
              "--batch-size", "2", "--width", "4", "--depth", "2", "--crop", "32", "--no-bf16", "--quiet"]
    assert main(["train", "--stage", "both", "--out", str(tmp_path / "plain")] + common) == 0
    start = tmp_path / "plain" / "syn.pt"
    assert main(["train", "--stage", "s2", "--condition", "--init-from", str(start),
                 "--out", str(tmp_path / "cond"), "--name", "syn-c"] + common) == 0
    plain, cond = read_bundle(start), read_bundle(tmp_path / "cond" / "syn-c.pt")
    assert cond.conditioned and cond.s2.config.in_channels == 4 and cond.baseline_kind == "reference"
    for a, b in ((plain.s1, cond.s1), (plain.s2, cond.reference)):  # S1 and the baseline are the start's
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            torch.testing.assert_close(x, y, msg=name)
    assert cond.provenance["stages"]["s2"]["options"]["condition"] is True
    image = blob_image(48, 64, seed=2)
    assert iterseg.load(tmp_path / "cond" / "syn-c.pt").predict(image, patches=2).mask.shape == (48, 64)
    # a conditioned bundle can start another run: its reference S2 is the starting point
    assert main(["train", "--stage", "s2", "--condition", "--init-from", str(tmp_path / "cond" / "syn-c.pt"),
                 "--out", str(tmp_path / "again"), "--name", "syn-c"] + common) == 0
    again = read_bundle(tmp_path / "again" / "syn-c.pt")
    for (name, x), (_, y) in zip(plain.s2.state_dict().items(), again.reference.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, msg=name)
    # without a reference (as shipped) the conditioned S2 itself is fine-tuned, and the baseline is S1 + S2
    lean = tmp_path / "lean.pt"
    save_bundle(dataclasses.replace(cond, reference=None), lean, half=False)
    assert main(["train", "--stage", "s2", "--init-from", str(lean), "--out", str(tmp_path / "r"), "--name", "x"]
                + common) == 2
    assert "add --condition" in capsys.readouterr().err
    assert main(["train", "--stage", "s2", "--condition", "--init-from", str(lean), "--lr", "1e-12",
                 "--out", str(tmp_path / "tuned"), "--name", "syn-t"] + common) == 0
    tuned = read_bundle(tmp_path / "tuned" / "syn-t.pt")
    assert tuned.baseline_kind == "s1+s2" and tuned.reference is None
    torch.testing.assert_close(tuned.s2.state_dict()["inc.0.weight"], cond.s2.state_dict()["inc.0.weight"])


def test_conditioning_flags_are_refused_for_stage1(tmp_path):
    spec_path = write_dataset(tmp_path)
    assert main(["train", "--spec", str(spec_path), "--data-root", str(tmp_path), "--stage", "s1", "--condition",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2


def test_options_left_out_keep_the_training_defaults():
    from iterseg.cli import build_parser
    from iterseg.training.loop import TrainOptions
    args = build_parser().parse_args(["train", "--spec", "x", "--stage", "s2", "--out", "o", "--epochs", "3"])
    opts = train_options(args, "s2")
    assert opts.epochs == 3 and opts.lr == TrainOptions.lr and opts.crop == 256 and opts.precision == "auto"
    assert opts.crop_sizes == TrainOptions.crop_sizes
    small = train_options(build_parser().parse_args(["train", "--spec", "x", "--stage", "s1", "--out", "o",
                                                     "--crop", "100", "--no-bf16"]), "s1")
    assert small.crop == 100 and small.crop_sizes == (64, 96) and small.precision == "fp32"  # --no-bf16


@pytest.mark.slow  # seconds of training: make test-slow / CI
def test_a_new_stage1_at_another_scale_for_a_bundles_s2(tmp_path, capsys):
    spec_path = write_dataset(tmp_path)
    common = ["--spec", str(spec_path), "--data-root", str(tmp_path), "--epochs", "1", "--steps", "2",
              "--batch-size", "2", "--depth", "2", "--crop", "32", "--no-bf16", "--quiet"]
    assert main(["train", "--stage", "both", "--width", "4", "--out", str(tmp_path / "plain")] + common) == 0
    start = read_bundle(tmp_path / "plain" / "syn.pt")
    assert main(["train", "--stage", "s1", "--s1-scale", "0.5", "--width", "2", "--init-from",
                 str(tmp_path / "plain" / "syn.pt"), "--out", str(tmp_path / "half"), "--name", "half"] + common) == 0
    assert "bundle written" in capsys.readouterr().out
    half = read_bundle(tmp_path / "half" / "half.pt")
    assert half.s1_scale == 0.5 and half.s1.config.width == 2 and half.window == start.window
    assert half.mean == start.mean and half.std == start.std  # the new S1 learns with the S2's normalisation
    for name, tensor in start.s2.state_dict().items():
        torch.testing.assert_close(half.s2.state_dict()[name], tensor)
    assert half.provenance["stages"]["s2"]["from_bundle"] == str(tmp_path / "plain" / "syn.pt")
    result = iterseg.api.Segmenter(half).predict(blob_image(64, 96), patches=2)
    assert result.options["s1_input"] == [32, 48]


def test_a_new_stage1_for_a_conditioned_s2_is_refused(tmp_path, capsys):
    spec_path = write_dataset(tmp_path)
    common = ["--spec", str(spec_path), "--data-root", str(tmp_path), "--epochs", "1", "--steps", "2",
              "--batch-size", "2", "--width", "4", "--depth", "2", "--crop", "32", "--no-bf16", "--quiet"]
    assert main(["train", "--stage", "both", "--out", str(tmp_path / "plain")] + common) == 0
    assert main(["train", "--stage", "s2", "--condition", "--init-from", str(tmp_path / "plain" / "syn.pt"),
                 "--out", str(tmp_path / "cond"), "--name", "cond"] + common) == 0
    lean = tmp_path / "lean.pt"
    save_bundle(dataclasses.replace(read_bundle(tmp_path / "cond" / "cond.pt"), reference=None), lean)
    assert main(["train", "--stage", "s1", "--init-from", str(lean), "--out", str(tmp_path / "x")] + common) == 2
    assert "conditioned" in capsys.readouterr().err


@pytest.mark.slow  # seconds of training or a MONAI import: make test-slow / CI
def test_max_minutes_is_one_budget_for_both_stages(tmp_path):
    spec_path = write_dataset(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--spec", str(spec_path), "--data-root", str(tmp_path), "--stage", "both", "--out", str(out),
                 "--max-minutes", "0.03", "--epochs", "1000", "--steps", "1000000", "--batch-size", "2", "--width", "4",
                 "--depth", "2", "--crop", "32", "--no-bf16", "--quiet"]) == 0
    seconds = {stage: json.loads((out / stage / "summary.json").read_text())["seconds"] for stage in ("s1", "s2")}
    assert 0.6 <= seconds["s1"] < 0.6 + 5  # a third of 1.8 s, plus one validation
    assert seconds["s1"] + seconds["s2"] < 1.8 + 10
    assert (out / "syn.pt").is_file()
