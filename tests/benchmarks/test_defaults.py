"""benchmarks/defaults.py: a bundle's default window count read off its sweep, by the issue's rule."""
import dataclasses
import json

import pytest

import iterseg
from benchmarks.defaults import choose, main
from iterseg.errors import ModelError
from iterseg.model.store import read_bundle, save_bundle

from synthetic import blob_image, small_bundle


def point(method, patches, dice, ratio):
    return {"method": method, "precision": "fp32", "patches": patches, "dice": dice, "macs_ratio": ratio}


def summary(dices, method="two-stage/mean", base="baseline", base_dice=0.8):
    """Curve points at N_p 0, 4, 16, 64 costing 5, 10, 20, 50 % of the baseline."""
    return [point(base, None, base_dice, 1.0)] + [point(method, n, d, r) for n, d, r in
                                                  zip((0, 4, 16, 64), dices, (0.05, 0.1, 0.2, 0.5), strict=True)]


def test_the_cheapest_count_that_keeps_99_percent_of_the_baseline():
    assert choose(summary([0.70, 0.793, 0.795, 0.80]))["patches"] == 4
    assert choose(summary([0.793, 0.793, 0.795, 0.80]))["patches"] == 0  # stage 1 alone is enough


def test_without_99_percent_the_best_dice_at_a_quarter_of_the_cost():
    chosen = choose(summary([0.70, 0.72, 0.74, 0.78]))
    assert chosen["patches"] == 16 and "no N_p keeps" in chosen["rule"]  # N_p 64 costs 50 %


def test_a_conditioned_bundle_is_judged_on_its_own_curve():
    rows = summary([0.5, 0.5, 0.5, 0.5]) + summary([0.88, 0.911, 0.915, 0.915], "conditioned/mean",
                                                   "conditioned/baseline", 0.92)[1:]
    rows.append(point("conditioned/baseline", None, 0.92, 1.0))
    assert choose(rows)["patches"] == 4


def test_the_default_is_written_into_the_bundle_and_used_by_predict(tmp_path, capsys):
    sweep, bundle_path = tmp_path / "syn.json", tmp_path / "b.pt"
    sweep.write_text(json.dumps({"summary": summary([0.70, 0.793, 0.795, 0.80])}))
    save_bundle(small_bundle(), bundle_path, half=False)
    assert main([str(sweep), str(bundle_path)]) == 0
    assert "4 windows by default" in capsys.readouterr().out
    bundle = read_bundle(bundle_path)
    assert bundle.patches == 4 and "syn.json" in bundle.provenance["default"]["measured"]
    image = blob_image(64, 64)
    result = iterseg.load(bundle_path).predict(image, patch_size=16)
    assert len(result.windows) == 4 and any("model" in note and "default" in note for note in result.notes)
    told = iterseg.load(bundle_path).predict(image, patches=2, patch_size=16)
    assert len(told.windows) == 2 and not any("default" in note for note in told.notes)
    assert main([str(tmp_path / "missing.json"), str(bundle_path)]) == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_default_count_is_refused_when_the_bundle_is_made(bad):
    with pytest.raises(ModelError, match="patches must be a window count"):
        dataclasses.replace(small_bundle(), patches=bad)
