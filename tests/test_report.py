"""The JSON report and the terminal summary of one prediction, for images in memory and streamed,
binary and multi-class."""
import json

import numpy as np
import pytest

import iterseg
from iterseg.report import class_fractions, result_report, summary

from synthetic import blob_image, multiclass_bundle, write_tiled

MODEL = {"name": "small", "classes": ["background", "foreground"]}


def test_a_report_holds_what_the_result_says(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=3, patch_size=32)
    report = result_report(result, "in/blobs.png", image.shape, MODEL, {"mask": "out/blobs.mask.png"})
    json.dumps(report)  # JSON-ready
    assert report["iterseg"] == iterseg.__version__ and report["model"] == MODEL
    assert report["image"] == {"path": "in/blobs.png", "height": 96, "width": 128, "channels": 3}
    # windows labelled, in selection order, each with its score (window_scores kept for older readers)
    assert [[w[k] for k in "yxhw"] for w in report["windows"]] == result.windows.tolist()
    assert all(type(w[k]) is int for w in report["windows"] for k in "yxhw")
    assert [w["score"] for w in report["windows"]] == pytest.approx(result.scores.tolist())
    assert report["window_scores"] == pytest.approx(result.scores.tolist())
    assert report["foreground_fraction"] == pytest.approx(float(result.mask.mean()))
    assert report["macs"] == result.macs and report["options"] == result.options
    assert report["seconds"] == {k: round(v, 4) for k, v in result.seconds.items()}
    assert report["outputs"] == {"mask": "out/blobs.mask.png"} and report["notes"] == result.notes
    assert "class_fractions" not in report
    gray = result_report(result, "g.png", (96, 128), MODEL, {}, foreground_fraction=0.25)
    assert gray["image"]["channels"] == 1 and gray["foreground_fraction"] == 0.25


def test_the_summary_lines(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=500, patch_size=32, precision="fp32")
    report = result_report(result, "blobs.png", image.shape, MODEL, {})
    lines = summary(report).splitlines()
    assert lines[0] == "blobs.png: 128 x 96, model small"
    assert lines[1].startswith("  refined 12 of 500 windows asked (32 px, score mean); foreground ")
    assert "ratio" in lines[2] and "(fvcore: 1 multiply-accumulate = 1 flop)" in lines[2]
    assert lines[3].startswith(f"  seconds (fp32, {result.options['backend']})  stage1 ")
    assert lines[-1] == "  note: 500 patches asked, the grid has only 12 windows: all refined"
    budget = iterseg.two_stage(image, bundle, budget=0.3, patch_size=32)
    budget_report = result_report(budget, "blobs.png", image.shape, MODEL, {})
    assert f"  refined {len(budget.windows)} windows (32 px" in summary(budget_report)


def test_windows_given_by_the_caller_have_no_score(bundle, image):
    result = iterseg.two_stage(image, bundle, windows=np.array([[0, 0, 32, 32]]))
    report = result_report(result, "blobs.png", image.shape, MODEL, {})
    json.loads(json.dumps(report, allow_nan=False))  # strict JSON: no NaN
    assert report["windows"] == [{"y": 0, "x": 0, "h": 32, "w": 32, "score": None}]


def test_the_baseline_summary_says_what_ran(bundle, image):
    result = iterseg.Segmenter(bundle).predict_baseline(image)
    lines = summary(result_report(result, "blobs.png", image.shape, MODEL, {})).splitlines()
    assert lines[1].startswith("  baseline: the full-resolution model over the whole image (s2); foreground ")
    assert "None" not in "\n".join(lines[:3])


def test_a_multiclass_report_has_class_fractions_unless_streamed(tmp_path):
    bundle = multiclass_bundle()
    model = {"name": "shapes", "classes": list(bundle.class_names)}
    picture = blob_image(64, 96, seed=3)
    result = iterseg.two_stage(picture, bundle, patches=4)
    report = result_report(result, "p.png", picture.shape, model, {})
    fractions = report["class_fractions"]
    assert list(fractions) == list(bundle.class_names) and sum(fractions.values()) == pytest.approx(1, abs=1e-5)
    assert fractions == {name: pytest.approx((result.mask == i).mean(), abs=1e-6)
                         for i, name in enumerate(bundle.class_names)}
    assert "  classes  " in summary(report) and report["options"]["score"] == "uncertainty"
    path = write_tiled(tmp_path / "p.tif", picture, tile=(32, 32))
    streamed = iterseg.two_stage(path, bundle, stream=True, patches=4)
    assert "class_fractions" not in result_report(streamed, path, picture.shape, model, {}, foreground_fraction=0.5)


def test_class_fractions():
    mask = np.array([[0, 1, 1, 3]], np.uint8)
    assert class_fractions(mask, ("a", "b", "c", "d")) == {"a": 0.25, "b": 0.5, "c": 0.0, "d": 0.25}
