"""Training on a synthetic dataset: the loss falls, a bundle comes out and is usable, resume works."""
import csv

import numpy as np
import torch

import iterseg
from iterseg.cli import main
from iterseg.model.unet import UNet, UNetConfig
from iterseg.training.data import load_spec
from iterseg.training.loop import TrainOptions, load_images, train_stage, train_step
from iterseg.training.sampling import CropSampler

from synthetic import write_dataset

TINY = dict(epochs=2, steps_per_epoch=3, batch_size=2, width=4, depth=2, crop=32, crop_sizes=(16, 32), bf16=False)


def test_a_few_steps_lower_the_loss(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    opts = TrainOptions(stage="s2", **{**TINY, "batch_size": 4})
    images = load_images(spec, spec.split("train"), 3)
    crops, targets = CropSampler(opts, images, spec.augment).batch(np.random.default_rng(0))
    model = UNet(UNetConfig(width=4, depth=2)).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [train_step(model, optimizer, crops, targets, (0.4,) * 3, (0.3,) * 3, opts) for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_crop_sampler_sizes_cover_the_requested_range(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    images = load_images(spec, spec.split("train"), 3)
    sampler = CropSampler(TrainOptions(stage="s2", **TINY), images, spec.augment)
    shapes = {sampler.batch(np.random.default_rng(seed))[0].shape for seed in range(12)}
    assert {s[1] for s in shapes} == {16, 32}
    assert all(s[0] * s[1] * s[2] == 2 * 32 * 32 for s in shapes)  # pixels per batch kept
    s1 = CropSampler(TrainOptions(stage="s1", **TINY), images, spec.augment)
    assert s1.batch(np.random.default_rng(0))[0].shape[1:] == (12, 12, 3)  # 96 / 8 -> multiple of 4


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
    result = seg.predict(np.zeros((40, 56, 3), np.uint8), patches=2)
    assert result.mask.shape == (40, 56)
    argv[argv.index("--epochs") + 1] = "3"
    argv[argv.index("both")] = "s2"
    assert main(argv + ["--resume"]) == 0
    with open(out / "s2" / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_uncertain_sampling_needs_stage_one(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    opts = TrainOptions(stage="s2", sampling="uncertain", **TINY)
    try:
        train_stage(spec, opts, tmp_path / "run", quiet=True)
    except iterseg.InputError as exc:
        assert "train stage 1 first" in str(exc)
    else:
        raise AssertionError("uncertain sampling without S1 should be refused")
    train_stage(spec, TrainOptions(stage="s1", **TINY), tmp_path / "run", quiet=True)
    summary = train_stage(spec, opts, tmp_path / "run", quiet=True)
    assert summary["options"]["sampling"] == "uncertain" and summary["best_val_dice"] >= 0
