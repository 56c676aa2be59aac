"""`iterseg predict --cluster`: its help and its one-line errors, which need no Dask (the cluster runs
themselves: tests/test_cluster.py, with Dask installed)."""
from iterseg import cluster
from iterseg.cli import main

from synthetic import write_image_folder


def test_cli_cluster_option_errors_are_one_line(tmp_path, bundle_path, capsys, monkeypatch):
    folder = write_image_folder(tmp_path / "in", 2)
    args = ["predict", str(folder), "--model", str(bundle_path), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args + ["--cluster", "local:0"]) == 2
    assert main(args + ["--cluster", "nowhere.json"]) == 2
    assert main(args + ["--cluster", "banana"]) == 2
    err = capsys.readouterr().err
    assert "local:N" in err and "nowhere.json" in err and "banana" in err
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name: None)
    assert main(args + ["--cluster", "local:2"]) == 2
    assert "pip install 'iterseg[dask]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_explains_cluster(capsys):
    assert main(["predict", "--help"]) == 0
    assert "--cluster" in capsys.readouterr().out
