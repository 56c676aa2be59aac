"""The OpenVINO backend: the graph built from a U-Net computes what PyTorch computes, the engine runs
it through the same calls (two-stage, baseline, streamed, threads), and ``--backend auto`` picks it
only where it is installed and measured faster. OpenVINO is a dependency of iterseg: these tests
always run."""
import copy
import dataclasses
import functools
import json
import threading

import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.engine.source import ArraySource
from iterseg.errors import InputError, ModelError
from iterseg.model import cpu, openvino_backend, runtime
from iterseg.model.quantize import convolutions, fold_batch_norm
from iterseg.model.runtime import Runner, check_backend
from iterseg.model.store import read_bundle, save_bundle
from iterseg.training.calibrate import calibrate_bundle

from synthetic import blob_image, conditioned_bundle, multiclass_bundle, small_bundle, write_tiled


@pytest.fixture
def fresh_backend(monkeypatch, tmp_path):
    """``--backend auto`` decided anew from a probe cached under tmp_path, not forced by the environment."""
    monkeypatch.setenv("ITERSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu.AUTO_BACKEND_OVERRIDE, raising=False)
    runtime._auto_backend.cache_clear()
    yield tmp_path / "cache" / "probe.json"
    runtime._auto_backend.cache_clear()


@pytest.mark.parametrize("network", [
    lambda: small_bundle().s2,                                # batch norm folded
    lambda: small_bundle(norm="none", depth=3, width=6).s1,  # no batch norm, 3 levels
    lambda: conditioned_bundle()[0].s2,                      # 4 input channels
    lambda: multiclass_bundle().s2,                          # K = 3
])
@pytest.mark.parametrize("shape", [(1, 32, 48), (5, 16, 16), (2, 64, 40)])
def test_the_graph_computes_the_network_in_fp32(network, shape):
    net = network().eval()
    n, h, w = shape
    x = torch.randn(n, net.config.in_channels, h, w)
    with torch.inference_mode():
        expected = net(x)
        got = Runner(net, "fp32", backend="openvino")(x)
        channels_last = Runner(net, "fp32", backend="openvino")(x.contiguous(memory_format=torch.channels_last))
    assert got.dtype == torch.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_array_equal(channels_last.numpy(), got.numpy())


def test_a_shape_met_again_runs_on_a_model_compiled_for_it_with_the_same_output():
    net = small_bundle().s2.eval()
    runner = Runner(net, "fp32", backend="openvino")
    x = torch.randn(3, 3, 32, 48)
    outputs = [runner(x) for _ in range(3)]
    static = runner.network._static[(3, 32, 48, 3)]
    assert static is not None and static is not runner.network.compiled  # compiled for (3, 32, 48, 3) alone
    for output in outputs[1:]:
        np.testing.assert_allclose(output.numpy(), outputs[0].numpy(), atol=1e-5)
    for side in range(16, 16 + 4 * 20, 4):  # many shapes, each twice: at most STATIC_SHAPES stay compiled
        runner(torch.randn(1, 3, side, side)), runner(torch.randn(1, 3, side, side))
    assert sum(model is not None for model in runner.network._static.values()) == runner.network.STATIC_SHAPES


def test_a_large_input_runs_on_a_model_of_its_shape_and_only_the_latest_is_kept(monkeypatch):
    net = small_bundle().s2.eval()
    runner = Runner(net, "fp32", backend="openvino")
    monkeypatch.setattr(runner.network, "LARGE_PIXELS", 32 * 32)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        outputs = [runner(x) for _ in range(2)]
        assert runner.network._large[0] == (1, 64, 64, 3)  # compiled at first sight
        runner(torch.randn(1, 3, 16, 16)), runner(torch.randn(1, 3, 16, 16))  # a small one: static after twice
        runner.release_memory()
        outputs.append(runner(x))
        runner(torch.randn(1, 3, 48, 48))
        assert runner.network._large[0] == (1, 48, 48, 3)  # the latest large shape only
        expected = net(x)
    compiled = {shape for shape, model in runner.network._static.items() if model is not None}
    assert compiled == {(1, 16, 16, 3)}  # no second copy of a large shape
    for output in outputs:
        np.testing.assert_allclose(output.numpy(), expected.numpy(), atol=1e-4)


def test_a_streamed_image_gives_the_networks_memory_back(monkeypatch, bundle, tmp_path):
    released = []
    monkeypatch.setattr(Runner, "release_memory", lambda self: released.append(self))
    path = write_tiled(tmp_path / "t.tif", blob_image(128, 128, seed=4), tile=(64, 64))
    iterseg.two_stage(path, bundle, stream=True, patches=2, patch_size=32, backend="openvino")
    s1, s2 = bundle.runners(backend="openvino")
    assert released == [s1, s2]  # after stage 1, and at the end
    iterseg.two_stage(blob_image(128, 128, seed=4), bundle, patches=2, patch_size=32, backend="openvino")
    assert len(released) == 2  # an image in memory keeps them for the next image


def test_bf16_on_openvino_stays_close_to_fp32(bundle, image):
    fp32 = iterseg.two_stage(image, bundle, patches=6, patch_size=16, precision="fp32", backend="openvino")
    bf16 = iterseg.two_stage(image, bundle, patches=6, patch_size=16, precision="bf16", backend="openvino")
    assert 0 < np.abs(bf16.probs - fp32.probs).max() < 0.03  # bf16 really ran, and stayed close


def test_two_stage_and_baseline_on_openvino_equal_torch_in_fp32(bundle, image, tmp_path):
    runs = {}
    for backend in ("torch", "openvino"):
        runs[backend] = [iterseg.two_stage(image, bundle, patches=5, patch_size=32, precision="fp32", backend=backend),
                         iterseg.baseline(image, bundle, precision="fp32", backend=backend)]
    for on_torch, on_openvino in zip(runs["torch"], runs["openvino"], strict=True):
        assert on_openvino.options["backend"] == "openvino" and on_openvino.options["backend_reason"] == "asked"
        np.testing.assert_allclose(on_openvino.probs, on_torch.probs, atol=1e-5)
        np.testing.assert_array_equal(on_openvino.windows, on_torch.windows)
        assert on_openvino.macs == on_torch.macs
    path = write_tiled(tmp_path / "t.tif", blob_image(128, 128, seed=4), tile=(64, 64))
    streamed = iterseg.two_stage(path, bundle, stream=True, patches=3, patch_size=32, precision="fp32",
                                 backend="openvino")
    memory = iterseg.two_stage(blob_image(128, 128, seed=4), bundle, patches=3, patch_size=32, precision="fp32",
                               backend="torch")
    np.testing.assert_allclose(streamed.probs_at(np.arange(128), np.arange(128))[0], memory.probs, atol=1e-5)


def test_threads_sharing_a_segmenter_on_openvino_get_their_own_results(bundle):
    segmenter = iterseg.Segmenter(bundle, precision="fp32", backend="openvino")
    images = [blob_image(96, 128, seed=s) for s in range(4)]
    alone = [segmenter.predict(im, patches=3, patch_size=32).probs for im in images]
    shared = [None] * 4

    def run(i):
        shared[i] = segmenter.predict(images[i], patches=3, patch_size=32).probs
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one, other in zip(alone, shared, strict=True):
        np.testing.assert_allclose(other, one, atol=1e-6)


def test_the_graph_refuses_a_layer_it_does_not_know():
    folded = fold_batch_norm(small_bundle().s2.eval())
    folded.head = torch.nn.Sequential(folded.head, torch.nn.Sigmoid())
    with pytest.raises(TypeError, match="no OpenVINO operator for Sigmoid"):
        openvino_backend.unet_graph(folded)


# --- choosing the backend ----------------------------------------------------------------------------

def fake_probe(monkeypatch, speedup):
    """The OpenVINO probe measures ``speedup``; returns the list of its runs."""
    runs = []
    monkeypatch.setattr(runtime, "measure_openvino_speedup", lambda precision: runs.append(precision) or speedup)
    return runs


@pytest.mark.parametrize("speedup, picked", [(2.5, "openvino"), (1.2, "openvino"), (1.02, "torch"), (0.7, "torch")])
def test_auto_takes_openvino_only_where_the_probe_finds_it_faster(monkeypatch, fresh_backend, speedup, picked):
    runs = fake_probe(monkeypatch, speedup)
    chosen = check_backend("auto", "fp32")
    assert (chosen, chosen.reason) == (picked, f"auto: OpenVINO measured {speedup:.2f}x torch in fp32")
    assert check_backend("auto", "fp32") == picked and runs == ["fp32"]  # measured once per process
    stored = json.loads(fresh_backend.read_text())
    assert list(stored.values()) == [speedup] and "| fp32" in next(iter(stored))  # and kept on disk


def test_auto_stays_on_torch_where_openvino_cannot_run(monkeypatch, fresh_backend, bundle):
    fake_probe(monkeypatch, 3.0)
    assert check_backend("auto", "fp32", compile=True).reason == "auto: torch.compile was asked for"
    monkeypatch.setattr(openvino_backend, "installed", lambda: False)
    missing = check_backend("auto", "fp32")
    assert missing == "torch" and "pip install openvino" in missing.reason
    with pytest.raises(InputError, match="the openvino backend cannot run this: the openvino package is not"):
        check_backend("openvino", "fp32")
    with pytest.raises(InputError, match="backend must be one of auto, torch, openvino, got 'onnx'"):
        iterseg.two_stage(blob_image(32, 32), bundle, backend="onnx")


def test_a_segmenters_backend_gives_way_where_a_call_rules_openvino_out(monkeypatch, fresh_backend, bundle, image):
    fake_probe(monkeypatch, 3.0)
    automatic = iterseg.Segmenter(bundle, precision="fp32")
    assert automatic.defaults["backend"] == "openvino"
    assert automatic.predict(image, patches=1, patch_size=32).options["backend"] == "openvino"
    ruled_out = check_backend(automatic.defaults["backend"], "fp32", compile=True)
    assert (ruled_out, ruled_out.reason) == ("torch", "auto: torch.compile was asked for")
    asked = iterseg.Segmenter(bundle, precision="fp32", backend="openvino")
    with pytest.raises(InputError, match="the openvino backend cannot run this: torch.compile was asked for"):
        asked.predict(image, compile=True)


@pytest.mark.parametrize("forced", ["torch", "openvino"])
def test_the_environment_forces_what_auto_backend_means(monkeypatch, fresh_backend, forced):
    monkeypatch.setattr(runtime, "measure_openvino_speedup", lambda precision: pytest.fail("probe ran"))
    monkeypatch.setenv(cpu.AUTO_BACKEND_OVERRIDE, forced)
    chosen = check_backend("auto", "bf16")
    assert (chosen, chosen.reason) == (forced, "auto: forced by ITERSEG_AUTO_BACKEND")
    monkeypatch.setenv(cpu.AUTO_BACKEND_OVERRIDE, "tensorrt")
    with pytest.raises(InputError, match="ITERSEG_AUTO_BACKEND must be torch or openvino"):
        check_backend("auto", "fp32")


def test_the_probe_divides_the_best_torch_time_by_the_best_openvino_time(monkeypatch):
    made = []
    real_runner = runtime.Runner

    def runner(net, precision, backend="torch"):
        made.append((precision, backend))
        return real_runner(net, precision, backend=backend)
    monkeypatch.setattr(runtime, "Runner", runner)
    readings = iter([0, 4, 0, 5, 0, 4, 0, 2, 0, 1, 0, 2])  # (start, end) of each timed pass: torch, then OpenVINO
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: next(readings))
    assert runtime.measure_openvino_speedup("bf16", repeats=3, side=32) == pytest.approx(4.0)
    assert made == [("bf16", "torch"), ("bf16", "openvino")]


def test_the_cli_takes_the_backend_and_reports_it(tmp_path, image_path, bundle_path, capsys):
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        assert main(["predict", str(image_path), "--model", str(bundle_path), "--backend", backend,
                     "--precision", "fp32", "--out", str(out)]) == 0
        options = json.loads((out / f"{image_path.stem}.report.json").read_text())["options"]
        assert (options["backend"], options["backend_reason"]) == (backend, "asked")
        assert f"seconds (fp32, {backend})" in capsys.readouterr().out
    assert main(["predict", str(image_path), "--backend", "onnx"]) == 2
    assert "--backend" in capsys.readouterr().err


# --- int8 -------------------------------------------------------------------------------------------

def int8_bundle(made=small_bundle):
    """A small bundle (``made()``) calibrated for int8 on two synthetic images: calibrated once per
    ``made``, each call a copy whose provenance and int8 ranges a test may change."""
    calibrated = _calibrated(made)
    return dataclasses.replace(calibrated, provenance=copy.deepcopy(calibrated.provenance),
                               int8_inputs=dict(calibrated.int8_inputs))


@functools.cache
def _calibrated(made):
    images = [ArraySource(blob_image(96, 128, seed=s), 3).unit for s in range(2)]
    return calibrate_bundle(made(), images)


def fake_int8_probe(monkeypatch, speedup):
    """OpenVINO's int8 probe measures ``speedup`` against its float run."""
    monkeypatch.setattr(runtime, "measure_openvino_int8_speedup", lambda floats: speedup)


@pytest.mark.parametrize("made", [small_bundle, multiclass_bundle, lambda: conditioned_bundle()[0]],
                         ids=["binary", "3 classes", "conditioned"])
def test_the_int8_graph_runs_int8_convolutions_close_to_the_float_network(made):
    bundle = int8_bundle(made)
    x = torch.from_numpy(((blob_image(64, 96, seed=5) / 255.0 - 0.5) / 0.25).transpose(2, 0, 1).copy())[None].float()
    if bundle.conditioned:  # the coarse map's channel, in [-1, 1]
        x = torch.cat([x, torch.linspace(-1, 1, 96).expand(1, 1, 64, 96)], dim=1)
    runner = Runner(bundle.s2, "int8", backend=runtime.Choice("openvino", "asked"),
                    int8_inputs=bundle.int8_inputs["s2"])
    with torch.inference_mode():
        got, want = runner(x), bundle.s2(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert float((got - want).norm() / want.norm()) < 0.05  # 256 levels per tensor: a few % of the logits
    compiled = runner.network.compiled
    ran = [(op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str).lower())
           for op in compiled.get_runtime_model().get_ordered_ops()]
    convs = [precision for kind, precision in ran if kind in ("Convolution", "Deconvolution")]
    assert len(convs) == len(convolutions(bundle.s2)) and set(convs) <= {"i8", "u8"}, ran  # every one in int8


def test_an_int8_bundle_runs_on_openvino_where_its_int8_pays(monkeypatch, fresh_backend, image, tmp_path):
    fake_int8_probe(monkeypatch, 1.8)
    save_bundle(int8_bundle(), tmp_path / "q.pt")
    loaded = read_bundle(tmp_path / "q.pt")
    assert {name: tuple(t.shape) for name, t in loaded.int8_inputs.items()} == {
        name: (len(convolutions(net)), 2) for name, net in loaded.networks().items()}
    result = iterseg.Segmenter(loaded, precision="int8", warm_up=False).predict(image, patches=2, patch_size=32)
    assert result.options["backend"] == "openvino"
    assert "int8 measured 1.80x OpenVINO" in result.options["backend_reason"]
    assert not any("PyTorch's int8 kernels" in note for note in result.notes)
    baseline = iterseg.Segmenter(loaded, precision="int8", warm_up=False).predict_baseline(image)
    assert baseline.options["backend"] == "openvino"


@pytest.mark.parametrize("speedup, loss, inputs, backend", [
    (0.9, None, True, "torch"),   # int8 is no faster than OpenVINO's float run on this CPU
    (1.8, 0.012, True, "torch"),  # its check on test images lost more than 0.005 Dice
    (1.8, 0.004, True, "openvino"),
    (1.8, None, False, "torch"),  # calibrated before OpenVINO int8 existed
])
def test_int8_stays_on_pytorch_where_openvinos_does_not_pay_and_the_note_says_why(
        monkeypatch, fresh_backend, image, speedup, loss, inputs, backend):
    fake_int8_probe(monkeypatch, speedup)
    bundle = int8_bundle()
    if loss is not None:
        bundle.provenance["int8"]["openvino_check"] = {"loss": loss, "quality": "dice", "against": "bf16 on openvino",
                                                       "images": 4, "spec": "syn", "split": "test"}
    if not inputs:
        bundle.int8_inputs = None
    result = iterseg.Segmenter(bundle, precision="int8", warm_up=False).predict(image, patches=1, patch_size=32)
    assert result.options["backend"] == backend
    why = [note for note in result.notes if note.startswith("int8 ran on PyTorch's int8 kernels, not OpenVINO's")]
    assert bool(why) == (backend == "torch")
    if why:
        expected = ("measured only 0.90x" if speedup < 1 else "no OpenVINO calibration" if not inputs else
                    "lost 0.0120 dice against bf16 on openvino on 4 syn test images")
        assert expected in why[0]


def test_asking_for_openvino_int8_overrides_the_check_but_not_a_missing_calibration(monkeypatch, fresh_backend, image):
    fake_int8_probe(monkeypatch, 0.5)
    bundle = int8_bundle()
    bundle.provenance["int8"]["openvino_check"] = {"loss": 0.05, "quality": "dice"}
    asked = iterseg.Segmenter(bundle, precision="int8", backend="openvino", warm_up=False)
    assert asked.predict(image, patches=1, patch_size=32).options["backend"] == "openvino"
    bundle = int8_bundle()
    bundle.int8_inputs = None
    with pytest.raises(InputError, match="no OpenVINO calibration .* run `iterseg quantize` again"):
        iterseg.Segmenter(bundle, precision="int8", backend="openvino", warm_up=False)


def test_int8_input_ranges_that_do_not_fit_the_network_are_refused(tmp_path):
    bundle = int8_bundle()
    bundle.int8_inputs["s2"] = bundle.int8_inputs["s2"][:-1]
    with pytest.raises(ModelError, match="int8 input ranges .* do not fit its network"):
        openvino_backend.unet_graph(bundle.s2, bundle.int8_inputs["s2"])
    save_bundle(bundle, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="damaged bundle metadata"):
        read_bundle(tmp_path / "bad.pt")
