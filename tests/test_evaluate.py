"""Evaluation over a synthetic spec, through the API and the CLI."""
import json

import pytest

import iterseg
from iterseg.cli import main
from iterseg.training.data import load_spec
from iterseg.training.evaluate import evaluate, markdown_table

from synthetic import small_bundle, write_dataset


def test_evaluate_rows_and_summary(tmp_path):
    spec = load_spec(write_dataset(tmp_path), tmp_path)
    report = evaluate(iterseg.Segmenter(small_bundle()), spec, "test", patches=(0, 2))
    assert report["images"] == 2 and len(report["rows"]) == 2 * 3
    assert list(report["summary"]) == ["s1", "np=2", "baseline"]
    base = report["summary"]["baseline"]
    assert base["macs_ratio"] == 1.0 and base["dice_vs_baseline"] == pytest.approx(1.0) or base["dice"] == 0
    assert report["summary"]["s1"]["macs_ratio"] < report["summary"]["np=2"]["macs_ratio"] < 1
    assert "| np=2 |" in markdown_table(report)


def test_cli_evaluate_writes_json_and_markdown(tmp_path, bundle_path, capsys):
    spec_path = write_dataset(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--spec", str(spec_path), "--data-root", str(tmp_path), "--model", str(bundle_path),
                 "--patches", "0,1", "--out", str(out), "--quiet"]) == 0
    assert "| baseline |" in capsys.readouterr().out
    report = json.loads((out / "syn_test_small.json").read_text())
    assert {r["method"] for r in report["rows"]} == {"s1", "np=1", "baseline"}
    assert (out / "syn_test_small.md").read_text().startswith("syn (test split")
    assert main(["evaluate", "--spec", str(spec_path), "--patches", "1,x"]) == 2
