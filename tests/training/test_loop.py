"""Training a stage on a synthetic dataset: the loss falls, validation scores what it should, the run
folder holds what it promises, and stage 2 refuses what it cannot start from."""
import csv
import json

import numpy as np
import pytest
import torch

import iterseg
from iterseg.model.unet import UNet, UNetConfig
from iterseg.training.data import load_spec
from iterseg.training.loop import (
    TrainOptions,
    channel_stats,
    cosine_lr,
    load_images,
    load_start_state,
    split_train_val,
    train_stage,
    train_step,
    training_target,
    validate,
    validation_views,
)
from iterseg.training.sampling import CropSampler

from synthetic import bright_network, write_dataset, write_multiclass_dataset

TINY = dict(epochs=2, steps_per_epoch=3, batch_size=2, width=4, depth=2, crop=32, crop_sizes=(16, 32), precision="fp32")


@pytest.fixture
def spec(tmp_path):
    return load_spec(write_dataset(tmp_path), tmp_path)


def test_a_few_steps_lower_the_loss(spec):
    opts = TrainOptions(stage="s2", **{**TINY, "batch_size": 4})
    images = load_images(spec, spec.split("train"), 3)
    crops, targets = CropSampler(opts, images, spec.augment).batch(np.random.default_rng(0))
    model = UNet(UNetConfig(width=4, depth=2)).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [train_step(model, optimizer, crops, targets, (0.4,) * 3, (0.3,) * 3, opts) for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_validation_scores_the_stage_on_whole_images(spec):
    views = validation_views(load_images(spec, spec.split("test"), 3), seed=0)
    opts = TrainOptions(stage="s2", **TINY)
    mean, std = (0.5,) * 3, (0.25,) * 3
    assert validate(bright_network(), views, mean, std, opts) > 0.95  # the discs, found by hand-set weights
    nothing = bright_network()
    with torch.no_grad():
        nothing.head.bias[0] = -100.0
    assert validate(nothing, views, mean, std, opts) == 0.0
    s1 = TrainOptions(stage="s1", s1_scale=0.125, **TINY)  # stage 1 at 1/8 scale, upsampled: the discs, less sharply
    assert 0.5 < validate(bright_network(), views, mean, std, s1) < validate(bright_network(), views, mean, std, opts)


def test_a_stage_writes_its_run_folder_and_keeps_the_best_weights(spec, tmp_path):
    summary = train_stage(spec, TrainOptions(stage="s1", **TINY), tmp_path / "run", quiet=True)
    stage_dir = tmp_path / "run" / "s1"
    assert sorted(p.name for p in stage_dir.iterdir()) == ["best.pt", "last.pt", "log.csv", "summary.json"]
    with open(stage_dir / "log.csv", newline="") as handle:
        log = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in log] == [1, 2]
    best = max(float(row["val_dice"]) for row in log)
    assert 0 <= summary["best_val_dice"] <= 1 and summary["best_val_dice"] == pytest.approx(best, abs=1e-5)
    assert torch.load(stage_dir / "best.pt", weights_only=True)["val_dice"] == pytest.approx(best, abs=1e-5)
    assert json.loads((stage_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert set(summary["train_ids"]).isdisjoint(summary["val_ids"]) and len(summary["val_ids"]) == 1


def test_uncertain_sampling_needs_stage_one(spec, tmp_path):
    opts = TrainOptions(stage="s2", sampling="uncertain", **TINY)
    with pytest.raises(iterseg.InputError, match="train stage 1 first"):
        train_stage(spec, opts, tmp_path / "run", quiet=True)
    train_stage(spec, TrainOptions(stage="s1", **TINY), tmp_path / "run", quiet=True)
    summary = train_stage(spec, opts, tmp_path / "run", quiet=True)
    with open(tmp_path / "run" / "s2" / "log.csv", newline="") as handle:
        best = max(float(row["val_dice"]) for row in csv.DictReader(handle))
    assert summary["options"]["sampling"] == "uncertain" and (tmp_path / "run" / "s2" / "best.pt").is_file()
    assert 0 <= summary["best_val_dice"] <= 1 and summary["best_val_dice"] == pytest.approx(best, abs=1e-5)


@pytest.mark.parametrize("opts, words", [
    (TrainOptions(stage="s3"), "stage must be one of"),
    (TrainOptions(stage="s1", condition=True), "applies to stage 2 only"),
    (TrainOptions(stage="s1", s1_scale=0.0), "s1_scale must be in"),
])
def test_options_a_stage_cannot_take_are_refused(spec, tmp_path, opts, words):
    with pytest.raises(iterseg.InputError, match=words):
        train_stage(spec, opts, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / opts.stage).exists() or not any((tmp_path / "run" / opts.stage).iterdir())


def test_validation_holds_out_a_seeded_share():
    samples = list(range(20))
    train, val = split_train_val(samples, 0.15, seed=0)
    assert len(val) == 3 and sorted(train + val) == samples and (train, val) == split_train_val(samples, 0.15, 0)
    assert split_train_val([7], 0.15, 0) == ([7], [])


def test_targets_and_normalisation(tmp_path):
    spec = load_spec(write_multiclass_dataset(tmp_path), tmp_path)
    ids = np.array([[0, 1], [3, 2]], np.uint8)
    fov = np.array([[True, False], [True, True]])
    one_hot = training_target(spec, ids, fov)
    assert one_hot.shape == (2, 2, 4) and one_hot[0, 1].sum() == 0 and one_hot[1, 0, 3] == 1
    images = [(np.full((2, 2, 3), 0.2, np.float32), None, None), (np.full((2, 2, 3), 0.6, np.float32), None, None)]
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.4,) * 3) and std == pytest.approx((0.2,) * 3)


def test_the_learning_rate_falls_to_five_percent():
    opts = TrainOptions(epochs=10, lr=1e-3)
    assert cosine_lr(opts, 0) == pytest.approx(1e-3) and cosine_lr(opts, 1.0) == pytest.approx(5e-5)
    assert cosine_lr(opts, 0.3) > cosine_lr(opts, 0.4) and cosine_lr(opts, 2.0) == pytest.approx(5e-5)


@pytest.mark.slow  # seconds of training or a MONAI import: make test-slow / CI
def test_a_time_budget_stops_inside_an_epoch_and_the_schedule_spans_it(spec, tmp_path):
    budget = 0.05  # minutes: 3 s, far less than one epoch of a million steps
    opts = TrainOptions(stage="s1", **{**TINY, "epochs": 1000, "steps_per_epoch": 10 ** 6, "max_minutes": budget})
    summary = train_stage(spec, opts, tmp_path / "run", quiet=True)
    with open(tmp_path / "run" / "s1" / "log.csv", newline="") as handle:
        log = list(csv.DictReader(handle))
    assert len(log) == 1  # the one epoch was cut short when the time was spent
    assert 60 * budget <= summary["seconds"] < 60 * budget + 10  # plus one validation (and a busy machine)
    # the cosine spanned the time budget, not the 1000 epochs (there it would still be at ~lr); the
    # last step starts before the time is spent, how long before depends on the machine's load
    assert float(log[0]["lr"]) < 0.5 * opts.lr


def test_a_conditioned_s2_starts_from_an_unconditioned_one_with_the_same_output():
    plain = UNet(UNetConfig(depth=2, width=4)).eval()
    conditioned = load_start_state(UNet(UNetConfig(in_channels=4, depth=2, width=4)), plain.state_dict()).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(conditioned(torch.cat([x, torch.randn(1, 1, 16, 16)], 1)), plain(x))
