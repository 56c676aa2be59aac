"""Running networks: precision (fp32 / bf16), torch.compile, and what the CPU can do."""
import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.errors import InputError
from iterseg.model import cpu
from iterseg.model.runtime import Runner, check_precision

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


@pytest.mark.parametrize("call", [
    lambda b, im: iterseg.two_stage(im, b, precision="fp16"),
    lambda b, im: iterseg.baseline(im, b, precision="int4"),
    lambda b, im: iterseg.Segmenter(b, precision="double"),
])
def test_unknown_precision_is_refused(bundle, image, call):
    with pytest.raises(InputError, match="precision must be one of fp32, bf16"):
        call(bundle, image)


@pytest.mark.slow
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


def test_cpu_flags_decide_what_is_emulated(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert cpu.has_vnni() and cpu.lacks_bf16_units()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"amx_bf16", "avx_vnni"}))
    assert cpu.has_vnni() and not cpu.lacks_bf16_units()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset())  # unknown (macOS, ARM): nothing is missing
    assert not cpu.has_vnni() and not cpu.lacks_bf16_units()


def test_this_machines_flags_are_read_once():
    flags = cpu.cpu_flags()
    assert isinstance(flags, frozenset) and cpu.cpu_flags() is flags


def test_runners_keep_the_network_and_return_float32_logits(bundle):
    x = torch.randn(2, 3, 16, 20)
    fp32, bf16 = Runner(bundle.s2), Runner(bundle.s2, "bf16")
    assert fp32.network is bundle.s2 and bf16.network is not bundle.s2 and fp32.config == bundle.s2.config
    with torch.inference_mode():
        expected = bundle.s2(x)
        assert torch.equal(fp32(x), expected)
        assert bf16(x).dtype == torch.float32 and (bf16(x) - expected).abs().max() < 0.1
    assert check_precision("bf16") == "bf16"
