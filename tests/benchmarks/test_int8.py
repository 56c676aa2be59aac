"""benchmarks/int8.py end to end on a synthetic dataset (one image per precision, tiny network)."""
import json

import pytest
import torch

from benchmarks import int8 as int8_bench
from benchmarks.int8 import main
from iterseg.model.store import save_bundle

from synthetic import small_bundle, write_dataset


@pytest.mark.slow
def test_int8_benchmark_writes_sizes_dice_and_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(int8_bench, "lacks_bf16_units", lambda: True)  # bf16 on the first image only
    spec = write_dataset(tmp_path)
    save_bundle(small_bundle(), tmp_path / "small.pt")
    assert main(["--spec", str(spec), "--model", str(tmp_path / "small.pt"), "--data-root", str(tmp_path),
                 "--images", "2", "--emulated-bf16-images", "1", "--calibration-images", "2", "--patches", "2",
                 "--out", str(tmp_path / "out")]) == 0
    cpu = torch.backends.cpu.get_cpu_capability()
    entry = json.loads((tmp_path / "out" / "int8.json").read_text())[f"syn ({cpu})"]
    assert entry["bundle_mb"]["int8"] < entry["bundle_mb"]["fp16"] < entry["bundle_mb"]["fp32"]
    found = {(s["precision"], s["method"]): s for s in entry["summary"]}
    assert found[("fp32", "baseline")]["dice_change"] == 0 and found[("bf16", "two-stage")]["images"] == 1
    assert found[("int8", "two-stage")]["images"] == 2
    assert f"| syn | {cpu} | int8 |" in (tmp_path / "out" / "int8.md").read_text()
