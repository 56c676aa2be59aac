"""``iterseg evaluate``: the JSON and Markdown reports of a spec's split, and bad arguments."""
import json

from iterseg.cli import main
from iterseg.model.runtime import check_precision

from synthetic import write_dataset


def test_cli_evaluate_writes_json_and_markdown(tmp_path, bundle_path, capsys):
    spec_path = write_dataset(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--spec", str(spec_path), "--data-root", str(tmp_path), "--model", str(bundle_path),
                 "--patches", "0,1", "--out", str(out), "--quiet"]) == 0
    assert "| baseline |" in capsys.readouterr().out
    report = json.loads((out / "syn_test_small.json").read_text())
    assert {r["method"] for r in report["rows"]} == {"s1", "np=1", "baseline"}
    assert (out / "syn_test_small.md").read_text().startswith("syn (test split")
    assert report["images"] == 2 and report["score"] == "default"
    assert report["precision"] == check_precision("auto")  # what ran: auto as this CPU resolves it
    assert main(["evaluate", "--spec", str(spec_path), "--patches", "1,x"]) == 2
    assert "--patches" in capsys.readouterr().err


def test_a_spec_without_a_data_root_says_how_to_give_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ITERSEG_DATA", raising=False)
    assert main(["evaluate", "--spec", str(write_dataset(tmp_path)), "--out", str(tmp_path / "e")]) == 2
    assert "pass --data-root DIR or set ITERSEG_DATA" in capsys.readouterr().err



def test_evaluate_takes_the_window_options_of_predict(tmp_path, bundle_path):
    spec_path = write_dataset(tmp_path)
    common = ["evaluate", "--spec", str(spec_path), "--data-root", str(tmp_path), "--model", str(bundle_path),
              "--patches", "2", "--quiet", "--patch-size", "32"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--context", "8"]) == 0
    alone, seen = (json.loads((tmp_path / d / "syn_test_small.json").read_text()) for d in "ab")
    assert alone["options"] == {"patch_size": 32} and seen["options"] == {"patch_size": 32, "context": 8}
    cost = {r["image"]: r["macs"] for r in alone["rows"] if r["method"] == "np=2"}
    assert all(r["macs"] > cost[r["image"]] for r in seen["rows"] if r["method"] == "np=2")  # context is paid for
