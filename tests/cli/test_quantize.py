"""``iterseg quantize``: an int8 bundle calibrated on a spec's training images, then predicted with
--precision int8 (compiling int8 networks takes tens of seconds: slow)."""
import json

import pytest

from iterseg.cli import main
from iterseg.model import cpu, runtime
from iterseg.model.store import read_bundle, save_bundle

from synthetic import small_bundle, write_dataset


@pytest.mark.slow
def test_cli_quantize_then_predict_in_int8(tmp_path):
    spec_path = write_dataset(tmp_path)
    bundle_path = tmp_path / "small.pt"
    save_bundle(small_bundle(), bundle_path)
    assert main(["quantize", "--model", str(bundle_path), "--spec", str(spec_path), "--data-root", str(tmp_path),
                 "--images", "3", "--out", str(tmp_path / "q.pt")]) == 0
    meta = read_bundle(tmp_path / "q.pt").provenance["int8"]
    assert meta["images"] == 3 and meta["spec"] == "syn" and len(meta["image_ids"]) == 3
    image = tmp_path / "SYN" / "images" / "img0.png"
    assert main(["predict", str(image), "--model", str(tmp_path / "q.pt"), "--precision", "int8",
                 "--patches", "4", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "img0.report.json").read_text())
    assert report["options"]["precision"] == "int8"
    assert main(["predict", str(image), "--model", str(bundle_path), "--precision", "int8",
                 "--out", str(tmp_path / "out2"), "--quiet"]) == 2



def test_cli_quantize_checks_openvino_int8_on_test_images_and_predict_runs_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "measure_openvino_int8_speedup", lambda floats: 1.8)  # int8 pays on this "CPU"
    monkeypatch.delenv(cpu.AUTO_BACKEND_OVERRIDE, raising=False)  # decided by the probe, not `make test-auto`
    runtime._auto_backend.cache_clear()
    spec_path = write_dataset(tmp_path)
    save_bundle(small_bundle(), tmp_path / "small.pt")
    assert main(["quantize", "--model", str(tmp_path / "small.pt"), "--spec", str(spec_path), "--data-root",
                 str(tmp_path), "--images", "2", "--check-images", "2", "--out", str(tmp_path / "q.pt")]) == 0
    printed = capsys.readouterr().out
    check = read_bundle(tmp_path / "q.pt").provenance["int8"]["openvino_check"]
    assert check["images"] == 2 and check["split"] == "test" and check["quality"] == "dice"
    assert set(check["float"]) == set(check["int8"]) == {"np=16", "baseline"}
    assert check["loss"] == max(check["float"][m] - check["int8"][m] for m in check["float"])
    assert f"baseline {check['float']['baseline']:.4f} -> {check['int8']['baseline']:.4f}" in printed
    image = tmp_path / "SYN" / "images" / "img0.png"
    assert main(["predict", str(image), "--model", str(tmp_path / "q.pt"), "--precision", "int8",
                 "--patches", "2", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    options = json.loads((tmp_path / "out" / "img0.report.json").read_text())["options"]
    expected = "torch" if check["loss"] > runtime.INT8_DICE_LIMIT else "openvino"
    assert (options["precision"], options["backend"]) == ("int8", expected)
    runtime._auto_backend.cache_clear()


def test_the_output_file_is_required(capsys):
    assert main(["quantize", "--spec", "ph2"]) == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err
