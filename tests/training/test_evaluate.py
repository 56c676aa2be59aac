"""Evaluation over a synthetic spec: rows and summaries equal to the metrics recomputed from the
masks, with a model whose masks mean something (bright_bundle: Dice near 1), binary and multi-class."""
import numpy as np
import pytest

import iterseg
from iterseg.training.data import load_spec, read_sample
from iterseg.training.evaluate import evaluate, markdown_table, summarise, write_report
from iterseg.training.metrics import class_counts, dice

from synthetic import CLASS_NAMES, bright_bundle, multiclass_bundle, write_dataset, write_multiclass_dataset


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    spec = load_spec(write_dataset(root), root)
    segmenter = iterseg.Segmenter(bright_bundle())
    return spec, segmenter, evaluate(segmenter, spec, "test", patches=(0, 2))


def test_rows_and_summary_equal_the_metrics_of_the_masks(report):
    spec, segmenter, result = report
    assert result["images"] == 2 and len(result["rows"]) == 2 * 3
    assert list(result["summary"]) == ["s1", "np=2", "baseline"]
    expected = {"s1": [], "np=2": [], "baseline": []}
    for sample in spec.split("test"):
        image, target, fov = read_sample(spec, sample)
        for method, res in (("s1", segmenter.predict(image, patches=0)), ("np=2", segmenter.predict(image, patches=2)),
                            ("baseline", segmenter.predict_baseline(image))):
            expected[method].append(dice(res.mask > 0, target, fov))
    for method, values in expected.items():
        assert result["summary"][method]["dice"] == pytest.approx(np.mean(values))
    base = result["summary"]["baseline"]
    assert base["dice"] > 0.9  # the discs are found: a Dice of 0 would fail here
    assert base["macs_ratio"] == 1.0 and base["dice_vs_baseline"] == pytest.approx(1.0)
    two = result["summary"]["np=2"]
    assert two["dice_vs_baseline"] == pytest.approx(two["dice"] / base["dice"])
    assert result["summary"]["s1"]["macs_ratio"] < two["macs_ratio"] < 1
    assert result["summary"]["s1"]["dice"] < two["dice"]  # refining the least certain windows helps


def test_the_markdown_table_and_the_files(report, tmp_path):
    _, _, result = report
    table = markdown_table(result)
    assert table.startswith("syn (test split, 2 images, model bright)") and "| np=2 |" in table
    write_report(result, tmp_path / "r.json", tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == table + "\n" and (tmp_path / "r.json").read_text().startswith("{")


def test_a_zero_baseline_gives_nan_ratios_not_an_error():
    rows = [{"method": m, "dice": 0.0, "iou": 0.0, "boundary_f1": 0.0, "macs_ratio": 0.5, "seconds": 1.0}
            for m in ("s1", "baseline")]
    summary = summarise(rows, ["s1", "baseline"])
    assert np.isnan(summary["s1"]["dice_vs_baseline"]) and np.isnan(summary["baseline"]["dice_vs_baseline"])


def test_multiclass_evaluation_sums_intersections_and_unions_over_the_split(tmp_path):
    spec = load_spec(write_multiclass_dataset(tmp_path), tmp_path)
    segmenter = iterseg.Segmenter(multiclass_bundle())
    result = evaluate(segmenter, spec, patches=(0, 2))
    assert result["classes"] == list(CLASS_NAMES) and list(result["summary"]) == ["s1", "np=2", "baseline"]
    both, union, correct, labelled = np.zeros(4), np.zeros(4), 0, 0
    for sample in spec.split("test"):
        image, target, fov = read_sample(spec, sample)
        pred = segmenter.predict_baseline(image).mask
        b, u = class_counts(pred, target, 4, fov)
        both, union = both + b, union + u
        correct, labelled = correct + int(((pred == target) & fov).sum()), labelled + int(fov.sum())
    base = result["summary"]["baseline"]
    expected = [pytest.approx(b / u) if u else None for b, u in zip(both, union, strict=True)]
    assert list(base["class_iou"].values()) == expected
    present = [v for v in base["class_iou"].values() if v is not None]
    assert base["miou"] == pytest.approx(np.mean(present))
    assert base["pixel_accuracy"] == pytest.approx(correct / labelled)
    assert "IoU square" in markdown_table(result)


def test_a_model_with_other_classes_is_refused(tmp_path):
    spec = load_spec(write_multiclass_dataset(tmp_path), tmp_path)
    with pytest.raises(iterseg.InputError, match="has 2 classes but spec shapes has 4"):
        evaluate(iterseg.Segmenter(bright_bundle()), spec)


def test_refinement_that_lowers_dice_gets_a_note_and_rising_curves_none(report):
    from iterseg.training.evaluate import refinement_notes
    _, _, result = report
    assert result["notes"] == []  # the bright model's curve rises
    summary = {"s1": {"dice": 0.74}, "np=4": {"dice": 0.737}, "np=16": {"dice": 0.735}, "baseline": {"dice": 0.78}}
    notes = refinement_notes(summary, (0, 4, 16))
    assert notes == ["refinement lowered Dice: 0.0030 less with 4 windows than with 0",
                     "refinement lowered Dice: 0.0050 less with 16 windows than with 0"]
    assert "- refinement lowered Dice" in markdown_table({**result, "notes": notes})
