"""int8: batch-norm folding, int8 weights on disk, and predicting with precision='int8'. Calibrating
and compiling an int8 network take seconds per input shape, so those tests are marked slow and share
one calibrated bundle and a few image sizes. (Calibration on data: tests/training/test_calibrate.py;
the command: tests/cli/test_quantize.py.)"""
import time

import numpy as np
import pytest
import torch

import iterseg
from iterseg.model.quantize import as_stored, float_state, fold_batch_norm, int8_network, int8_state
from iterseg.model.runtime import Runner
from iterseg.model.store import read_bundle, save_bundle
from iterseg.model.unet import UNet, UNetConfig
from iterseg.training.calibrate import calibrate_bundle

from synthetic import blob_image, small_bundle


@pytest.fixture(scope="module")
def int8_bundle():
    bundle = small_bundle()
    images = [blob_image(64, 64, seed=s).astype(np.float32) / 255 for s in range(4)]
    return bundle, calibrate_bundle(bundle, images)


def test_folding_batch_norm_keeps_the_function():
    model = small_bundle().s2
    folded = fold_batch_norm(model)
    assert folded.config.norm == "none"
    x = torch.randn(2, 3, 24, 32)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_folding_a_network_without_batch_norm_changes_nothing():
    model = UNet(UNetConfig(depth=2, width=4, norm="none")).eval()
    folded = fold_batch_norm(model)
    for (name, x), (_, y) in zip(model.state_dict().items(), folded.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_int8_weights_round_trip_within_half_a_step():
    state = fold_batch_norm(small_bundle().s2).state_dict()
    stored = int8_state(state)
    weight = "inc.0.weight"
    assert stored[weight].dtype == torch.int8 and stored[weight + ".int8_scale"].shape == (state[weight].shape[0],)
    back = float_state(stored)
    step = stored[weight + ".int8_scale"][:, None, None, None]
    assert (back[weight] - state[weight]).abs().le(step / 2 + 1e-7).all()
    assert back["up.0.weight"].dtype == torch.float32  # transposed convolutions stay float (float16 on disk)


@pytest.mark.slow
def test_int8_predictions_stay_close_to_float32(int8_bundle):
    bundle, int8 = int8_bundle
    image = blob_image(64, 96, seed=9)
    reference = iterseg.two_stage(image, bundle, patches=4)
    # the same windows: on this untrained network scores sit near 0.5 and any rounding can swap them
    quantized = iterseg.two_stage(image, int8, windows=reference.windows, precision="int8")
    assert quantized.options["precision"] == "int8"
    assert np.abs(quantized.probs - reference.probs).mean() < 0.02
    assert (quantized.mask == reference.mask).mean() > 0.97


@pytest.mark.slow
def test_int8_bundle_file_is_smaller_and_loads_the_same_network(int8_bundle, tmp_path):
    bundle, int8 = int8_bundle
    save_bundle(bundle, tmp_path / "fp16.pt")
    save_bundle(int8, tmp_path / "int8.pt")
    assert (tmp_path / "int8.pt").stat().st_size < 0.75 * (tmp_path / "fp16.pt").stat().st_size
    again = read_bundle(tmp_path / "int8.pt")
    assert again.int8_ranges and again.meta()["int8"]
    image = blob_image(64, 96, seed=9)
    np.testing.assert_allclose(iterseg.two_stage(image, again, patches=4, precision="int8").probs,
                               iterseg.two_stage(image, int8, patches=4, precision="int8").probs, atol=1e-6)
    # an int8 bundle still runs in float32 (batch norm folded, weights as stored), compared on the same
    # windows: this untrained network's scores sit near 0.5, where rounding the weights can swap them
    reference = iterseg.two_stage(image, bundle, patches=4, precision="fp32")
    as_float = iterseg.two_stage(image, again, windows=reference.windows, precision="fp32")
    assert as_float.options["precision"] == "fp32" and np.abs(as_float.probs - reference.probs).mean() < 0.01


def test_stored_int8_weights_are_stable():
    """as_stored gives the weights an int8 file will hold; storing those again changes nothing."""
    model = fold_batch_norm(small_bundle().s2)
    stored = as_stored(model)
    again = int8_state(stored.state_dict())
    first = int8_state(model.state_dict())
    for key, value in first.items():
        if value.dtype == torch.int8:
            assert torch.equal(again[key], value), key
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        assert (stored(x) - model(x)).abs().max() < 0.05


@pytest.mark.slow
def test_int8_runs_without_compiling_and_keeps_the_calibrated_network(int8_bundle):
    """The int8 runner uses the eager x86 kernels with the bundle's PT2E ranges: its first call costs
    about what a later one does, and it computes what the calibrated PT2E network computes."""
    _, int8 = int8_bundle
    runner = Runner(int8.s2, "int8", int8_ranges=int8.int8_ranges["s2"])
    kinds = {type(m).__module__ for m in runner.network.modules()}
    assert not runner.compiled_int8 and "torch.ao.nn.intrinsic.quantized.modules.conv_relu" in kinds
    x = torch.randn(4, int8.s2.config.in_channels, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        start = time.perf_counter()
        first = runner(x)
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        again = runner(x)
        later_seconds = time.perf_counter() - start
        reference = int8_network(int8.s2, int8.int8_ranges["s2"])(x)  # PT2E, not compiled (reference kernels)
        floats = int8.s2(x)
    assert first_seconds <= 3 * later_seconds + 0.5  # no compilation: compiling takes tens of seconds
    assert torch.equal(first, again)
    assert (first.sigmoid() - reference.sigmoid()).abs().mean() < 0.01
    assert (first.sigmoid() - floats.sigmoid()).abs().mean() < 0.02


@pytest.mark.slow
def test_the_int8_observer_map_is_worked_out_once_and_kept_on_disk(int8_bundle, monkeypatch, tmp_path):
    """Matching the FX observers to the bundle's PT2E ranges needs an export (most of the int8 set-up);
    its result is kept per torch version and architecture, so a later process skips it and runs the
    same network."""
    from iterseg.model import quantize
    monkeypatch.setenv("ITERSEG_CACHE", str(tmp_path))
    _, int8 = int8_bundle
    x = torch.randn(2, int8.s2.config.in_channels, 32, 48, generator=torch.Generator().manual_seed(2))
    first = Runner(int8.s2, "int8", int8_ranges=int8.int8_ranges["s2"])
    assert (tmp_path / "int8_map.json").is_file()

    def no_export(model):
        raise AssertionError("the kept observer map was not used")
    monkeypatch.setattr(quantize, "prepare", no_export)
    second = Runner(int8.s2, "int8", int8_ranges=int8.int8_ranges["s2"])
    with torch.inference_mode():
        assert torch.equal(first(x), second(x))
    with pytest.raises(iterseg.ModelError, match="calibrate again"):  # a calibration that does not fit
        quantize.eager_int8_network(quantize.fold_batch_norm(int8.s2), int8.int8_ranges["s2"][:-1])
