"""The FLOP/Dice sweep of benchmarks/sweep.py: its reference points, and end to end on a synthetic
dataset (seconds per run: slow)."""
import dataclasses
import json

import numpy as np
import pytest

from benchmarks.sweep import downscale_scale, main, oracle_windows, random_windows
from iterseg.engine.cost import count_macs
from iterseg.model.bundle import Bundle
from iterseg.model.store import save_bundle
from iterseg.model.unet import UNet

from synthetic import SMALL, small_bundle, write_dataset


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = write_dataset(root)
    model = root / "small.pt"
    save_bundle(small_bundle(), model, half=False)
    assert main(["--spec", str(spec), "--model", str(model), "--data-root", str(root), "--patches", "0,1,4",
                 "--grid", "4", "--out", str(root / "out")]) == 0
    return root / "out"


def rows_of(out):
    return json.loads((out / "syn.json").read_text())["rows"]


@pytest.mark.slow
def test_every_method_runs_on_every_image(report):
    rows = rows_of(report)
    methods = {(r["method"], r["precision"]) for r in rows}
    assert methods == {("baseline", "fp32"), ("baseline", "bf16"), ("two-stage/mean", "fp32"),
                       ("two-stage/uncertainty", "fp32"), ("two-stage/mean", "bf16"), ("random", "fp32"),
                       ("oracle", "fp32"),
                       ("downscale", "fp32"), ("iterative/R2", "fp32"), ("iterative/R3", "fp32"),
                       ("sliding/half", "fp32"), ("sliding/half-R3", "fp32")}
    assert len({r["image"] for r in rows}) == 2  # the test split of the synthetic spec
    assert (report / "syn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| two-stage/mean | fp32 | 4 |" in (report / "syn.md").read_text()


@pytest.mark.slow
def test_reference_points_cost_what_they_should(report):
    rows = rows_of(report)
    ours = {(r["image"], r["patches"]): r for r in rows if r["method"] == "two-stage/mean" and r["precision"] == "fp32"}
    for r in rows:
        if r["method"] in ("random", "oracle"):
            assert r["macs_ratio"] == ours[r["image"], r["patches"]]["macs_ratio"]
        elif r["method"] == "downscale":
            same = ours[r["image"], r["patches"]]["macs_ratio"]
            assert 0.5 * same < r["macs_ratio"] <= same
        elif r["method"] == "baseline":
            assert r["macs_ratio"] == 1.0
        elif r["method"] in ("iterative/R2", "iterative/R3", "sliding/half", "sliding/half-R3"):  # equal cost
            assert r["macs_ratio"] == ours[r["image"], r["patches"]]["macs_ratio"]
    s1 = [r for r in rows if r["patches"] == 0 and r["method"].startswith("two-stage") and r["precision"] == "fp32"]
    assert len({(r["dice"], r["macs_ratio"]) for r in s1 if r["image"] == s1[0]["image"]}) == 1


@pytest.mark.slow
def test_findings_are_read_off_the_summary(report):
    result = json.loads((report / "syn.json").read_text())
    findings = result["findings"]
    assert [e["patches"] for e in findings["per_patches"]] == [0, 1, 4]
    point = next(s for s in result["summary"] if s["method"] == "two-stage/mean" and s["patches"] == 4
                 and s["precision"] == "fp32")
    assert findings["per_patches"][2]["dice"] == point["dice"]
    assert {b["method"] for b in findings["bf16"]} == {"baseline", "two-stage/mean"}
    assert result["machine"]["cores"] >= 1


def test_downscale_scale_never_exceeds_the_budget():
    config = small_bundle().s2.config
    full = count_macs(config, 300, 200)
    for budget in (full // 64, full // 7, full // 2, full):
        scale = downscale_scale(config, 300, 200, budget)
        assert count_macs(config, round(300 * scale), round(200 * scale)) <= budget


def test_random_windows_are_distinct_grid_windows_and_seeded():
    first = random_windows(100, 80, 20, 7, seed=(0, 1, 7))
    assert len(np.unique(first, axis=0)) == 7 and (first[:, 2:] == 20).all()
    np.testing.assert_array_equal(first, random_windows(100, 80, 20, 7, seed=(0, 1, 7)))
    assert len(random_windows(100, 80, 20, 10_000, seed=0)) == 20


def test_the_oracle_takes_the_windows_stage1_gets_most_wrong():
    stage1 = np.zeros((40, 60), np.uint8)
    target = np.zeros((40, 60), bool)
    target[0:20, 40:60] = True     # window (0, 40): 400 wrong pixels
    target[20:30, 0:20] = True     # window (20, 0): 200 wrong
    stage1[25:40, 20:40] = 1       # window (20, 20): 300 wrong
    assert oracle_windows(stage1, target, None, 20, 2).tolist() == [[0, 40, 20, 20], [20, 20, 20, 20]]
    fov = np.ones((40, 60), bool)
    fov[:, 40:] = False            # the field of view hides the first
    assert oracle_windows(stage1, target, fov, 20, 2).tolist() == [[20, 20, 20, 20], [20, 0, 20, 20]]


@pytest.mark.slow
def test_merge_adds_groups_to_an_earlier_result(tmp_path):
    spec = write_dataset(tmp_path)
    model = tmp_path / "small.pt"
    save_bundle(small_bundle(), model, half=False)
    common = ["--spec", str(spec), "--model", str(model), "--data-root", str(tmp_path), "--patches", "0,2",
              "--grid", "4", "--precisions", "fp32", "--out", str(tmp_path / "out")]
    assert main(common + ["--groups", "core"]) == 0
    first = json.loads((tmp_path / "out" / "syn.json").read_text())["rows"]
    assert main(common + ["--groups", "sliding", "--merge"]) == 0
    merged = json.loads((tmp_path / "out" / "syn.json").read_text())["rows"]
    assert merged[:len(first)] == first
    assert {r["method"] for r in merged[len(first):]} == {"sliding/half", "sliding/half-R3"}


def write_conditioned(folder):
    """A synthetic dataset, an unconditioned bundle p.pt and a conditioned one c.pt (random S2 taking
    the image and the S1 probability; p's S2 as its reference network) in ``folder``; returns
    (spec path, the unconditioned bundle, the conditioned one)."""
    plain = small_bundle()
    s2 = UNet(SMALL.__class__(**{**SMALL.__dict__, "in_channels": 4}))
    conditioned = Bundle(s1=plain.s1, s2=s2, mean=plain.mean, std=plain.std, reference=plain.s2, name="c")
    save_bundle(conditioned, folder / "c.pt", half=False)
    save_bundle(plain, folder / "p.pt", half=False)
    return write_dataset(folder), plain, conditioned


@pytest.mark.slow
def test_conditioned_group_compares_the_two_s2_of_one_bundle(tmp_path):
    spec, _, _ = write_conditioned(tmp_path)
    common = ["--spec", str(spec), "--data-root", str(tmp_path), "--patches", "0,2", "--grid", "4",
              "--precisions", "fp32"]
    assert main(common + ["--model", str(tmp_path / "p.pt"), "--groups", "core", "--out", str(tmp_path / "p")]) == 0
    assert main(common + ["--model", str(tmp_path / "p.pt"), "--groups", "conditioned",
                          "--out", str(tmp_path / "x")]) != 0
    assert main(common + ["--model", str(tmp_path / "c.pt"), "--groups", "core,conditioned",
                          "--out", str(tmp_path / "c")]) == 0
    plain_rows, rows = rows_of(tmp_path / "p"), rows_of(tmp_path / "c")
    # the core curves of the conditioned bundle are those of its unconditioned self
    core = [{k: v for k, v in r.items() if k != "seconds"} for r in rows if not r["method"].startswith("conditioned/")]
    assert core == [{k: v for k, v in r.items() if k != "seconds"} for r in plain_rows]
    ours = [r for r in rows if r["method"] == "conditioned/mean"]
    images = {r["image"] for r in rows}
    assert len(ours) == len(images) == 2 and {r["patches"] for r in ours} == {2}
    one_shot = {r["image"]: r for r in rows if r["method"] == "two-stage/mean" and r["patches"] == 2}
    assert all(r["macs_ratio"] > one_shot[r["image"]]["macs_ratio"] for r in ours)
    report = json.loads((tmp_path / "c" / "syn.json").read_text())
    assert "conditioned/mean minus one-shot" in report["findings"]["per_patches"][1]


@pytest.mark.slow
def test_conditioned_model_without_reference_takes_the_unconditioned_bundle_from_a_file(tmp_path):
    spec, plain, with_reference = write_conditioned(tmp_path)
    save_bundle(dataclasses.replace(with_reference, reference=None), tmp_path / "lean.pt", half=False)
    save_bundle(dataclasses.replace(plain, s1=UNet(SMALL)), tmp_path / "other.pt", half=False)
    common = ["--spec", str(spec), "--data-root", str(tmp_path), "--patches", "0,2", "--grid", "4",
              "--precisions", "fp32", "--groups", "core,conditioned"]
    assert main(common + ["--model", str(tmp_path / "c.pt"), "--out", str(tmp_path / "c")]) == 0
    assert main(common + ["--model", str(tmp_path / "lean.pt"), "--out", str(tmp_path / "x")]) == 2  # no reference
    assert main(common + ["--model", str(tmp_path / "lean.pt"), "--unconditioned", str(tmp_path / "other.pt"),
                          "--out", str(tmp_path / "x")]) == 2  # another stage 1: other windows
    assert main(common + ["--model", str(tmp_path / "lean.pt"), "--unconditioned", str(tmp_path / "p.pt"),
                          "--out", str(tmp_path / "lean")]) == 0

    def without_seconds(rows, method):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows if r["method"] != method]
    kept, lean = rows_of(tmp_path / "c"), rows_of(tmp_path / "lean")
    assert without_seconds(lean, "conditioned/baseline") == without_seconds(kept, "conditioned/baseline")
    # its own baseline: stage 1 plus the conditioned S2 everywhere, costlier than the unconditioned S2
    own = [r for r in lean if r["method"] == "conditioned/baseline"]
    reference = [r for r in kept if r["method"] == "conditioned/baseline"]
    assert len(own) == 2 and all(r["macs_ratio"] > 1.01 for r in own)
    assert all(r["macs_ratio"] == 1 for r in reference)
    report = json.loads((tmp_path / "lean" / "syn.json").read_text())
    assert report["findings"]["conditioned_baseline"]["macs_ratio"] > 1.01
