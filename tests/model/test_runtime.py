"""Running networks: precision (auto / fp32 / bf16), torch.compile, and what the CPU can do."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.errors import InputError
from iterseg.model import cpu, runtime
from iterseg.model.runtime import Runner, check_precision
from iterseg.model.unet import UNet, UNetConfig

from synthetic import blob_image


def test_bf16_stays_close_to_fp32(bundle, image):
    fp32 = iterseg.two_stage(image, bundle, patches=6, patch_size=16, precision="fp32")
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
    eager = iterseg.two_stage(image, bundle, patches=3, patch_size=32, precision="fp32", backend="torch")
    compiled = iterseg.two_stage(image, bundle, patches=3, patch_size=32, precision="fp32", compile=True)
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


def test_loading_a_model_keeps_the_thread_count_torch_was_given():
    """numba's first parallel kernel (loading a Segmenter warms the kernels up) resets OpenMP's thread
    count, which torch shares; a fresh process, so that the kernels start there."""
    code = ("import torch; torch.set_num_threads(1); import iterseg; iterseg.load('ph2', precision='fp32'); "
            "print(torch.get_num_threads())")
    env = dict(os.environ, NUMBA_NUM_THREADS="2")  # what a 2-core machine gives numba
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-1] == "1"


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
    fp32, bf16 = Runner(bundle.s2, "fp32"), Runner(bundle.s2, "bf16")
    assert fp32.network is not bundle.s2 and bf16.network is not bundle.s2 and fp32.config == bundle.s2.config
    with torch.inference_mode():
        expected = bundle.s2(x)
        assert fp32(x).dtype == torch.float32 and fp32(x).is_contiguous()
        torch.testing.assert_close(fp32(x), expected, atol=1e-5, rtol=1e-5)
        assert bf16(x).dtype == torch.float32 and (bf16(x) - expected).abs().max() < 0.1
    assert check_precision("bf16") == "bf16"


# --- fp32: batch norm folded, channels_last -----------------------------------------------------------

def unet_with_statistics(seed=0):
    """A U-Net whose batch norms do something (random statistics and affine parameters)."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(3, 2, depth=3, width=8)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.3, 3)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    return model


def test_fp32_runs_a_folded_channels_last_copy_with_the_same_output():
    model = unet_with_statistics()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = Runner(model, "fp32")
    network = runner.network
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    assert network.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 40, 56)
    with torch.inference_mode():
        torch.testing.assert_close(runner(x), model(x), atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original keeps its norms
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


# --- auto ---------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_auto(monkeypatch, tmp_path):
    """auto decided anew (its per-process cache cleared) from the CPU (not $ITERSEG_AUTO_PRECISION, which
    `make test-auto` sets), its probe cached under tmp_path."""
    monkeypatch.setenv("ITERSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu.AUTO_OVERRIDE, raising=False)
    runtime._auto.cache_clear()
    yield tmp_path / "cache" / "probe.json"
    runtime._auto.cache_clear()


def fake_cpu(monkeypatch, flags, speedup=None):
    """This CPU has ``flags``; the bf16 probe measures ``speedup`` (None: the probe must not run).
    Returns the list of probe runs (one entry per measurement)."""
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    runs = []

    def probe(*args, **kwargs):
        assert speedup is not None, "auto ran the probe where the flags decide"
        runs.append(speedup)
        return speedup
    monkeypatch.setattr(runtime, "measure_bf16_speedup", probe)
    return runs


@pytest.mark.parametrize("flags, speedup, picked, reason", [
    ({"avx2", "fma"}, None, "fp32", "auto: no bf16 units (AVX2)"),
    ({"avx2", "avx512f", "avx512_vnni"}, None, "fp32", "auto: no bf16 units (AVX2)"),
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}, None, "bf16", "auto: AMX bf16 units"),
    ({"avx2", "avx512f", "avx512_bf16"}, 2.0, "bf16", "auto: AVX-512 BF16 without AMX: bf16 measured 2.00x fp32"),
    ({"avx2", "avx512f", "avx512_bf16"}, 0.6, "fp32", "auto: AVX-512 BF16 without AMX: bf16 measured 0.60x fp32"),
    ({"avx2", "avx512f", "avx512_bf16"}, 1.05, "fp32", None),  # within noise of fp32: keep the reference
    (set(), None, "fp32", "auto: CPU features unknown"),
    ({"neon"}, None, "fp32", "auto: no bf16 units"),
])
def test_auto_picks_from_the_cpu_features_and_never_a_slower_path(monkeypatch, fresh_auto, flags, speedup,
                                                                 picked, reason):
    runs = fake_cpu(monkeypatch, flags, speedup)
    chosen = check_precision("auto")
    assert chosen == picked and chosen != "int8"
    assert chosen.reason == reason or (reason is None and chosen.reason.startswith("auto: AVX-512 BF16"))
    assert check_precision("auto") == chosen and len(runs) == (speedup is not None)  # measured once per process


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx512f", "amx_bf16"}, {"avx2", "avx512f", "avx512_bf16"}])
def test_the_environment_forces_what_auto_means_on_every_cpu(monkeypatch, fresh_auto, bundle, image, flags, forced):
    fake_cpu(monkeypatch, flags)  # the probe must not run either
    monkeypatch.setenv(cpu.AUTO_OVERRIDE, forced)
    chosen = check_precision("auto")
    assert (chosen, chosen.reason) == (forced, f"auto: forced by {cpu.AUTO_OVERRIDE}")
    assert iterseg.two_stage(image, bundle, patches=1, patch_size=32).options["precision"] == forced
    assert check_precision("fp32") == "fp32" and check_precision("bf16") == "bf16"  # only auto is forced


def test_a_bad_forced_auto_is_refused_in_one_line(monkeypatch, fresh_auto):
    monkeypatch.setenv(cpu.AUTO_OVERRIDE, "int8")
    with pytest.raises(InputError, match="ITERSEG_AUTO_PRECISION must be fp32 or bf16, got 'int8'"):
        check_precision("auto")


def test_the_probe_is_measured_once_per_cpu_and_torch_and_kept_on_disk(monkeypatch, fresh_auto):
    calls = []
    monkeypatch.setattr(runtime, "measure_bf16_speedup", lambda: calls.append(1) or 1.7)
    assert runtime.bf16_speedup() == runtime.bf16_speedup() == 1.7 and len(calls) == 1
    stored = json.loads(fresh_auto.read_text())
    assert stored == {f"{cpu.cpu_model()} | torch {torch.__version__}": 1.7}


def test_the_probe_divides_the_best_fp32_time_by_the_best_bf16_time(monkeypatch):
    """The probe runs fp32 first, then bf16, each a warm-up and ``repeats`` timed passes; a fake clock
    makes fp32 passes take 6, 4, 5 units and bf16 passes 2, 3, 2: best 4 / best 2 = 2."""
    ran = []
    readings = iter([0, 6, 0, 4, 0, 5, 0, 2, 0, 3, 0, 2])  # (start, end) of each timed pass
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: next(readings))
    real_autocast = torch.autocast

    def autocast(*args, enabled=True, **kwargs):
        ran.append(enabled)
        return real_autocast(*args, enabled=enabled, **kwargs)
    monkeypatch.setattr(runtime.torch, "autocast", autocast)
    assert runtime.measure_bf16_speedup(repeats=3, side=8) == pytest.approx(2.0)
    assert ran == [False, True]  # fp32 then bf16


def test_the_report_says_what_auto_picked_and_why(monkeypatch, fresh_auto, bundle, image):
    fake_cpu(monkeypatch, {"avx2", "fma"})
    result = iterseg.two_stage(image, bundle, patches=2, patch_size=16)
    assert (result.options["precision"], result.options["precision_reason"]) == ("fp32",
                                                                                  "auto: no bf16 units (AVX2)")
    asked = iterseg.two_stage(image, bundle, patches=2, patch_size=16, precision="fp32")
    assert asked.options["precision_reason"] == "asked"
    np.testing.assert_array_equal(asked.probs, result.probs)  # auto is fp32 here, not something else
    fake_cpu(monkeypatch, {"avx512f", "amx_bf16"})
    runtime._auto.cache_clear()
    assert iterseg.two_stage(image, bundle, patches=2, patch_size=16).options["precision"] == "bf16"


def test_the_cli_defaults_to_auto_and_writes_the_reason(monkeypatch, fresh_auto, tmp_path, image_path,
                                                        bundle_path):
    fake_cpu(monkeypatch, {"avx2", "fma"})
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(tmp_path)]) == 0
    options = json.loads((tmp_path / f"{image_path.stem}.report.json").read_text())["options"]
    assert options["precision"] == "fp32" and options["precision_reason"] == "auto: no bf16 units (AVX2)"


def test_the_segmenter_resolves_auto_once(monkeypatch, fresh_auto, bundle):
    fake_cpu(monkeypatch, {"avx2"})
    segmenter = iterseg.Segmenter(bundle)
    assert segmenter.defaults["precision"] == "fp32"
    assert segmenter.defaults["precision"].reason == "auto: no bf16 units (AVX2)"
    assert bundle.runners("auto")[1] is bundle.runners("fp32")[1]  # one runner per concrete precision


# --- auto in training -------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, options, trained_in", [
    ({"avx2", "fma"}, {}, "fp32"),                         # AVX2: auto trains in fp32, never emulated bf16
    ({"avx512f", "amx_bf16"}, {}, "bf16"),
    ({"avx512f", "amx_bf16"}, {"precision": "fp32"}, "fp32"),
    ({"avx2"}, {"precision": "bf16"}, "bf16"),              # asked for: emulated, but asked (a warning says so)
])
def test_training_precision_follows_auto(monkeypatch, fresh_auto, flags, options, trained_in):
    from iterseg.training.loop import TrainOptions, train_precision
    fake_cpu(monkeypatch, flags)
    assert train_precision(TrainOptions(**options)) == trained_in


def test_training_in_int8_is_refused(fresh_auto):
    from iterseg.training.loop import TrainOptions, train_precision
    with pytest.raises(InputError, match="iterseg quantize"):
        train_precision(TrainOptions(precision="int8"))


def test_train_command_precision_options():
    from iterseg.cli import train
    parser = train.add_parser(__import__("argparse").ArgumentParser().add_subparsers())
    base = ["--spec", "ph2", "--stage", "s2", "--out", "runs/x"]
    assert train.train_options(parser.parse_args(base), "s2").precision == "auto"
    assert train.train_options(parser.parse_args(base + ["--precision", "bf16"]), "s2").precision == "bf16"
    assert train.train_options(parser.parse_args(base + ["--no-bf16"]), "s2").precision == "fp32"
