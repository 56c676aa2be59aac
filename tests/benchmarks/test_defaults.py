"""benchmarks/defaults.py: a shipped bundle's defaults measured on its validation images and written into it."""
import dataclasses

import pytest

from benchmarks.defaults import main
from iterseg.errors import ModelError
from iterseg.model.store import read_bundle, save_bundle
from iterseg.training.data import load_spec

from synthetic import small_bundle, write_dataset


def test_the_command_measures_a_bundle_and_refuses_one_without_validation_images(tmp_path, capsys):
    spec = write_dataset(tmp_path, count=6, height=64, width=80)
    ids = [sample.id for sample in load_spec(spec, tmp_path).split("train")][:2]
    bundle = dataclasses.replace(small_bundle(), provenance={"stages": {"s2": {"val_ids": ids}}}, window=16)
    save_bundle(bundle, tmp_path / "b.pt", half=False)
    assert main([str(tmp_path / "b.pt"), "--spec", str(spec), "--data-root", str(tmp_path)]) == 0
    assert "'context'" in capsys.readouterr().out and read_bundle(tmp_path / "b.pt").context is not None
    save_bundle(small_bundle(), tmp_path / "c.pt", half=False)
    assert main([str(tmp_path / "c.pt"), "--spec", str(spec), "--data-root", str(tmp_path)]) == 2
    assert "no validation images" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_default_count_is_refused_when_the_bundle_is_made(bad):
    with pytest.raises(ModelError, match="patches must be a window count"):
        dataclasses.replace(small_bundle(), patches=bad)


def test_a_test_report_at_the_default_is_recorded_for_the_model_card(tmp_path):
    import json

    from iterseg.cards import model_card
    save_bundle(dataclasses.replace(small_bundle(), patches=4), tmp_path / "b.pt", half=False)
    row = {"dice": 0.71234, "dice_vs_baseline": 0.95, "macs_ratio": 0.2}
    report = {"summary": {"s1": {**row, "dice": 0.6}, "np=4": row}, "options": {}}
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert main([str(tmp_path / "b.pt"), "--test-report", str(tmp_path / "r.json")]) == 0
    card = model_card(read_bundle(tmp_path / "b.pt"))
    assert card["test_dice"] == 0.7123 and card["default"]["of_baseline_dice"] == 0.95
    assert main([str(tmp_path / "b.pt")]) == 2  # neither --spec nor --test-report
