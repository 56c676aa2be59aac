"""``iterseg models``: a table of the embedded models (task, input, size trained on, data and licence,
test Dice, cost at the default, file size), read from the bundles; and Segmenter.card()."""
import json

import pytest

import iterseg
from iterseg.cards import DATASETS, model_card
from iterseg.cli import main
from iterseg.model.store import WEIGHTS_DIR, available_models, load_bundle


def test_models_prints_a_table_of_the_embedded_models(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "task", "input"] and "test Dice" in lines[0] and "file" in lines[0]
    names = available_models()
    assert [line.split()[0] for line in lines[1:1 + len(names)]] == names == ["drive", "hrf", "ph2", "untrained"]
    ph2 = next(line for line in lines if line.startswith("ph2 "))
    bundle = load_bundle("ph2")
    tested = bundle.provenance["test"]  # the test split at the default
    for text in ("skin lesion (binary)", "dermoscopy photo", "761-769 x 553-577", "PH2, 140 train / 60 test",
                 f"{tested['dice']:.3f}", f"{bundle.patches} x 48 px (+16 px context): "
                 f"{100 * tested['macs_ratio']:.1f} % MACs", f"{100 * tested['of_baseline']:.1f} % Dice",
                 f"{(WEIGHTS_DIR / 'ph2.pt').stat().st_size / 2 ** 20:.1f} MB"):
        assert text in ph2, text
    assert "0 x 224 px: 6.4 % MACs" in next(line for line in lines if line.startswith("hrf "))
    assert "PH2 licence: free for research use; cite Mendonca et al., EMBC 2013" in lines
    assert any(line.startswith("DRIVE licence:") for line in lines)


def test_models_json_and_the_api_card(capsys):
    assert main(["models", "--json"]) == 0
    cards = {card["name"]: card for card in json.loads(capsys.readouterr().out)}
    assert cards["drive"] == iterseg.load("drive").card() == model_card(load_bundle("drive"), WEIGHTS_DIR / "drive.pt")
    assert cards["drive"]["licence"] == DATASETS["drive"]["licence"] and cards["drive"]["default"]["windows"] == 0
    assert cards["drive"]["test_dice"] == pytest.approx(0.8166)  # benchmarks/results/eval26: stage 1 alone
    assert cards["drive"]["default"]["validation_dice"] == load_bundle("drive").provenance["default"]["dice"]
    assert cards["untrained"]["test_dice"] is None and cards["untrained"]["file_mb"] is None


def test_a_bundle_trained_on_other_data_shows_what_it_records(tmp_path, bundle_path):
    card = iterseg.load(bundle_path).card()
    assert card["file_mb"] is not None and card["input"] is None and card["licence"] is None
