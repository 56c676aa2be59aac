"""``iterseg models``: the embedded models, one line each with their stage-1 scale and window side."""
from iterseg.cli import main
from iterseg.model.store import available_models, load_bundle


def test_models_lists_the_embedded_models_with_their_defaults(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "data"]
    assert [line.split()[0] for line in lines[1:]] == available_models() == ["drive", "hrf", "ph2", "untrained"]
    for line in lines[1:]:
        bundle = load_bundle(line.split()[0])
        assert f"{bundle.s1_scale:g}" in line.split()
        assert (f"{bundle.window} px" if bundle.window else "N_p rule") in line
