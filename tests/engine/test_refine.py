"""A conditioned S2 sees the stage-1 probabilities of its window: what it is fed (by hand), the
baseline it is compared with, the file format, streaming, and training one from a bundle."""
import dataclasses

import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.flops import count_macs
from iterseg.model.bundle import Bundle
from iterseg.model.store import read_bundle, save_bundle
from iterseg.model.unet import UNet
from iterseg.stage1 import stage1_size

from synthetic import SMALL, blob_image, conditioned_bundle, small_bundle, write_dataset, write_tiled


def test_s2_is_fed_the_image_and_the_stage1_probabilities():
    bundle, _ = conditioned_bundle()
    image = blob_image(64, 96, seed=3)
    window = np.array([[16, 32, 32, 32]])
    result = iterseg.two_stage(image, bundle, windows=window)
    s1_only = iterseg.two_stage(image, bundle, patches=0)
    pixels = image.astype(np.float32) / 255
    crop = (pixels[16:48, 32:64] - np.float32(bundle.mean)) / np.float32(bundle.std)
    condition = (s1_only.probs[16:48, 32:64, None] - 0.5) / 0.5
    x = torch.from_numpy(np.concatenate([crop, condition], axis=2).transpose(2, 0, 1)[None].copy())
    with torch.inference_mode():
        expected = torch.sigmoid(bundle.s2(x))[0, 0].numpy()
    np.testing.assert_allclose(result.probs[16:48, 32:64], expected, atol=1e-6)
    outside = np.ones(result.probs.shape, bool)
    outside[16:48, 32:64] = False
    np.testing.assert_array_equal(result.probs[outside], s1_only.probs[outside])


def test_baseline_runs_the_reference_network_and_counts_its_macs():
    bundle, plain = conditioned_bundle()
    image = blob_image(64, 96, seed=4)
    assert bundle.baseline_kind == "reference"
    ours, theirs = iterseg.baseline(image, bundle), iterseg.baseline(image, plain)
    np.testing.assert_array_equal(ours.probs, theirs.probs)
    assert ours.macs["baseline"] == theirs.macs["baseline"] == count_macs(plain.s2.config, 64, 96)
    two = iterseg.two_stage(image, bundle, patches=4)
    assert two.macs["baseline"] == ours.macs["baseline"]
    assert two.macs["stage2"] == 4 * count_macs(bundle.s2.config, *two.options["s2_input"])


def test_without_a_reference_the_baseline_is_stage1_plus_the_conditioned_s2():
    bundle, _ = conditioned_bundle(with_reference=False)
    image = blob_image(64, 96, seed=4)
    assert bundle.baseline_kind == "s1+s2"
    result = iterseg.baseline(image, bundle)
    s1_macs = count_macs(bundle.s1.config, *stage1_size(64, 96, bundle.s1_scale))
    assert result.macs["stage1"] == s1_macs
    assert result.macs["total"] == result.macs["baseline"] == s1_macs + count_macs(bundle.s2.config, 64, 96)
    # refining every window of the grid with the whole image as context reproduces it
    everything = iterseg.two_stage(image, bundle, windows=np.array([[0, 0, 64, 96]]))
    np.testing.assert_allclose(result.probs, everything.probs, atol=1e-6)


def test_conditioned_bundle_round_trips_with_its_reference(tmp_path):
    bundle, _ = conditioned_bundle()
    save_bundle(bundle, tmp_path / "c.pt", half=False)
    again = read_bundle(tmp_path / "c.pt")
    assert again.conditioned and again.baseline_kind == "reference"
    image = blob_image(48, 48, seed=6)
    np.testing.assert_array_equal(iterseg.two_stage(image, again, patches=3).probs,
                                  iterseg.two_stage(image, bundle, patches=3).probs)
    np.testing.assert_array_equal(iterseg.baseline(image, again).probs, iterseg.baseline(image, bundle).probs)


def test_s2_with_the_wrong_input_channels_is_refused():
    plain = small_bundle()
    s2 = UNet(SMALL.__class__(**{**SMALL.__dict__, "in_channels": 5}))
    with pytest.raises(iterseg.ModelError, match="conditioned"):
        Bundle(s1=plain.s1, s2=s2, mean=plain.mean, std=plain.std)


def test_streamed_conditioned_windows_match_the_in_memory_ones(tmp_path):
    bundle, _ = conditioned_bundle()
    picture = blob_image(200, 160, seed=7)
    path = write_tiled(tmp_path / "c.tif", picture, tile=(32, 32))
    streamed = iterseg.two_stage_tiled(path, bundle, patches=5, patch_size=32, context=8)
    in_memory = iterseg.two_stage(picture, bundle, patches=5, patch_size=32, context=8)
    np.testing.assert_array_equal(streamed.windows, in_memory.windows)
    full = streamed.probs_at(np.arange(200), np.arange(160))[0]
    np.testing.assert_allclose(full, in_memory.probs, atol=2e-5)


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
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(x, y, msg=name)
    assert cond.provenance["stages"]["s2"]["options"]["condition"] is True
    image = blob_image(48, 64, seed=2)
    assert iterseg.load(tmp_path / "cond" / "syn-c.pt").predict(image, patches=2).mask.shape == (48, 64)
    # a conditioned bundle can start another run: its reference S2 is the starting point
    assert main(["train", "--stage", "s2", "--condition", "--init-from", str(tmp_path / "cond" / "syn-c.pt"),
                 "--out", str(tmp_path / "again"), "--name", "syn-c"] + common) == 0
    again = read_bundle(tmp_path / "again" / "syn-c.pt")
    for (name, x), (_, y) in zip(plain.s2.state_dict().items(), again.reference.state_dict().items()):
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
