"""Budgets, rounds, thresholds, sliding windows with non-maximum suppression, and blending."""
import json

import numpy as np
import pytest

import iterseg
from iterseg.cli import main
from iterseg.model.bundle import Bundle
from iterseg.rounds import Blender, overlap_fraction, ramp_weights, suppress
from iterseg.select import window_scores

from synthetic import blob_image, small_bundle


@pytest.fixture
def picture():
    return blob_image(96, 128, seed=12)


@pytest.mark.parametrize("budget", [0.05, 0.12, 0.3, 0.9])
def test_the_budget_is_never_exceeded(bundle, picture, budget):
    result = iterseg.two_stage(picture, bundle, patch_size=16, budget=budget)
    assert result.macs["total"] <= budget * result.macs["baseline"]
    one_more = result.macs["total"] + result.macs["stage2"] / max(1, len(result.windows))
    assert len(result.windows) == 48 or one_more > budget * result.macs["baseline"]  # it spent what it could
    gmacs = iterseg.two_stage(picture, bundle, patch_size=16, budget_gmacs=result.macs["total"] / 1e9)
    assert gmacs.macs["total"] <= result.macs["total"] and len(gmacs.windows) == len(result.windows)


def test_a_budget_below_stage_1_refines_nothing_and_says_why(bundle, picture):
    result = iterseg.two_stage(picture, bundle, patch_size=16, budget=0.001)
    assert len(result.windows) == 0 and "budget allows" in result.notes[-1]


def test_rounds_never_refine_a_window_twice_and_log_their_cost(bundle, picture):
    result = iterseg.two_stage(picture, bundle, patches=9, patch_size=16, rounds=3)
    assert len({tuple(w) for w in result.windows}) == len(result.windows) == 9
    log = result.options["rounds_log"]
    assert [len(r["windows"]) for r in log] == [3, 3, 3]
    assert sum(r["macs"] for r in log) == result.macs["stage2"]
    one_shot = iterseg.two_stage(picture, bundle, patches=9, patch_size=16)
    assert result.windows[:3].tolist() == one_shot.windows[:3].tolist()  # round 1 = the least certain of S1


@pytest.mark.parametrize("score, threshold", [("mean", 0.3), ("mean", 0.05), ("uncertainty", 0.4)])
def test_threshold_refines_exactly_the_windows_less_certain_than_it(bundle, picture, score, threshold):
    s1 = iterseg.two_stage(picture, bundle, patches=0)
    scores, _ = window_scores(s1.probs[None], 16, None, score)
    below = scores.ravel() < threshold if score == "mean" else scores.ravel() > threshold
    grid = iterseg.two_stage(picture, bundle, patches=10_000, patch_size=16, score=score)
    expected = {tuple(w) for w, s in zip(grid.windows, grid.scores) if (s < threshold if score == "mean" else s > threshold)}
    result = iterseg.two_stage(picture, bundle, patch_size=16, score=score, threshold=threshold)
    assert {tuple(w) for w in result.windows} == expected and len(expected) == below.sum()
    capped = iterseg.two_stage(picture, bundle, patch_size=16, score=score, threshold=threshold, patches=2)
    assert len(capped.windows) == min(2, len(expected))


def test_sliding_windows_keep_no_pair_above_the_allowed_overlap(bundle, picture):
    for max_overlap in (0.0, 0.25, 0.5):
        result = iterseg.two_stage(picture, bundle, patches=12, patch_size=32, stride=8, max_overlap=max_overlap)
        windows = result.windows
        for i in range(len(windows)):
            others = np.delete(windows, i, axis=0)
            assert overlap_fraction(windows[i], others).max() <= max_overlap + 1e-12
        assert result.options["blended"] and result.options["max_overlap"] == max_overlap


def test_suppression_walks_in_priority_order():
    candidates = np.array([[0, 0, 10, 10], [0, 5, 10, 10], [0, 10, 10, 10], [0, 20, 10, 10]])
    assert suppress(candidates, [1, 0, 2, 3], 3, 0.25, ()).tolist() == [1, 3]
    assert suppress(candidates, [0, 1, 2, 3], 3, 0.5, ()).tolist() == [0, 1, 2]


def test_blending_identical_outputs_leaves_the_map_unchanged(picture):
    net = small_bundle().s2
    same = Bundle(s1=net, s2=net, mean=(0.5,) * 3, std=(0.25,) * 3, s1_scale=1.0)
    base = iterseg.baseline(picture, same)
    radius = net.config.receptive_radius
    result = iterseg.two_stage(picture, same, patches=30, patch_size=24, stride=8, max_overlap=0.9, context=radius)
    assert result.options["blended"] and len(result.windows) > 10
    np.testing.assert_allclose(result.probs, base.probs, atol=1e-5)  # no seam anywhere


def test_blender_weights():
    ramp = ramp_weights(8, 12)
    assert ramp.min() > 0 and ramp.max() == 1 and np.allclose(ramp, ramp[::-1, ::-1])
    blender = Blender((20, 20), 1)
    windows = np.array([[0, 0, 8, 12], [4, 6, 8, 12]])
    blender.add(windows, np.full((1, 2, 8, 12), 0.7, np.float32))
    merged = blender.merged(np.zeros((1, 20, 20), np.float32))
    np.testing.assert_allclose(merged[0, :12, :18][merged[0, :12, :18] > 0], 0.7, rtol=1e-6)
    assert merged[0, 15:, :].max() == 0


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


def test_round_options_are_refused_when_streaming(tmp_path, bundle_path, capsys):
    from synthetic import write_tiled
    path = write_tiled(tmp_path / "t.tif", blob_image(64, 64), tile=(32, 32))
    assert main(["predict", str(path), "--stream", "always", "--rounds", "2", "--model", str(bundle_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not available for streamed images yet" in capsys.readouterr().err
    with pytest.raises(iterseg.InputError, match="stride below the window side"):
        iterseg.two_stage_tiled(path, small_bundle(), patch_size=32, stride=8)


def test_api_checks_round_options(bundle, picture):
    for kwargs, words in (({"budget": -1}, "budget"), ({"rounds": 0}, "rounds"), ({"threshold": 1.5}, "threshold"),
                          ({"max_overlap": 1}, "max_overlap")):
        with pytest.raises(iterseg.InputError, match=words):
            iterseg.two_stage(picture, bundle, **kwargs)
