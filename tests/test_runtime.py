"""Precision (fp32 / bf16) and torch.compile through the public API and the CLI."""
import json

import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.errors import InputError
from iterseg.model import cpu

from synthetic import blob_image


def test_bf16_stays_close_to_fp32(bundle, image):
    fp32 = iterseg.two_stage(image, bundle, patches=6, patch_size=16)
    bf16 = iterseg.two_stage(image, bundle, patches=6, patch_size=16, precision="bf16")
    assert bf16.probs.dtype == np.float32 and bf16.options["precision"] == "bf16"
    gap = np.abs(bf16.probs - fp32.probs)
    assert 0 < gap.max() < 0.03  # bf16 really ran (not fp32 again) and stayed close
    confident = np.abs(fp32.probs - 0.5) > 0.05
    np.testing.assert_array_equal(bf16.mask[confident], fp32.mask[confident])
    assert bf16.macs == fp32.macs


def test_bf16_leaves_the_bundle_networks_untouched(bundle, image):
    before = iterseg.baseline(image, bundle).probs
    weights = {k: v.clone() for k, v in bundle.s2.state_dict().items()}
    iterseg.baseline(image, bundle, precision="bf16")
    for name, value in bundle.s2.state_dict().items():
        assert torch.equal(value, weights[name]) and value.dtype == weights[name].dtype
    np.testing.assert_array_equal(iterseg.baseline(image, bundle).probs, before)


def test_segmenter_precision_is_a_default_that_calls_can_override(bundle, image):
    seg = iterseg.Segmenter(bundle, precision="bf16")
    assert seg.predict(image, patches=2).options["precision"] == "bf16"
    assert seg.predict(image, patches=2, precision="fp32").options["precision"] == "fp32"
    assert seg.predict_baseline(image).options["precision"] == "bf16"


@pytest.mark.parametrize("call", [
    lambda b, im: iterseg.two_stage(im, b, precision="fp16"),
    lambda b, im: iterseg.baseline(im, b, precision="int4"),
    lambda b, im: iterseg.Segmenter(b, precision="double"),
])
def test_unknown_precision_is_refused(bundle, image, call):
    with pytest.raises(InputError, match="precision must be one of fp32, bf16"):
        call(bundle, image)


def test_cli_precision_option(tmp_path, image_path, bundle_path, capsys):
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--precision", "bf16",
                 "--out", str(tmp_path)]) == 0
    assert "(bf16)" in capsys.readouterr().out
    assert json.loads((tmp_path / "blobs.report.json").read_text())["options"]["precision"] == "bf16"
    assert main(["predict", str(image_path), "--precision", "half", "--out", str(tmp_path)]) == 2
    assert "--precision" in capsys.readouterr().err


def test_compiled_networks_give_the_eager_result(bundle):
    image = blob_image(64, 64, seed=2)
    eager = iterseg.two_stage(image, bundle, patches=3, patch_size=32)
    compiled = iterseg.two_stage(image, bundle, patches=3, patch_size=32, compile=True)
    np.testing.assert_allclose(compiled.probs, eager.probs, atol=1e-5)


@pytest.mark.parametrize("flags, warned", [
    ({"avx2", "fma"}, True),                     # x86 without bf16 units: emulated
    ({"avx512f", "avx512_bf16"}, False),
    ({"avx512f", "amx_bf16"}, False),
    (set(), False),                              # features unknown (no /proc/cpuinfo flags): say nothing
])
def test_bf16_on_a_cpu_without_bf16_units_warns_once(monkeypatch, tmp_path, image_path, bundle_path, capsys,
                                                     flags, warned):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--precision", "bf16",
                 "--baseline", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err.count("bf16 is emulated") == (1 if warned else 0)
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--precision", "fp32",
                 "--overwrite", "--out", str(tmp_path)]) == 0
    assert "bf16 is emulated" not in capsys.readouterr().err
