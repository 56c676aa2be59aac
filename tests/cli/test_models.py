"""``iterseg models``: the embedded models, one per line."""
from iterseg.cli import main
from iterseg.model.store import available_models


def test_models_lists_the_embedded_models(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == available_models() == ["drive", "hrf", "ph2", "untrained"]
