"""int8: batch-norm folding, int8 weights on disk, calibration, and predicting with precision='int8'
from the API and the CLI. Compiling an int8 network takes seconds per input shape, so the tests
share one calibrated bundle and a few image sizes."""
import json

import numpy as np
import pytest
import torch

import iterseg
from iterseg.cli import main
from iterseg.model.quantize import float_state, fold_batch_norm, int8_state
from iterseg.model.store import read_bundle, save_bundle
from iterseg.training.calibrate import calibrate_bundle

from synthetic import blob_image, small_bundle, write_dataset


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


def test_int8_weights_round_trip_within_half_a_step():
    state = fold_batch_norm(small_bundle().s2).state_dict()
    stored = int8_state(state)
    weight = "inc.0.weight"
    assert stored[weight].dtype == torch.int8 and stored[weight + ".int8_scale"].shape == (state[weight].shape[0],)
    back = float_state(stored)
    step = stored[weight + ".int8_scale"][:, None, None, None]
    assert (back[weight] - state[weight]).abs().le(step / 2 + 1e-7).all()
    assert back["up.0.weight"].dtype == torch.float32  # transposed convolutions stay float (float16 on disk)


def test_int8_predictions_stay_close_to_float32(int8_bundle):
    bundle, int8 = int8_bundle
    image = blob_image(64, 96, seed=9)
    reference = iterseg.two_stage(image, bundle, patches=4)
    quantized = iterseg.two_stage(image, int8, patches=4, precision="int8")
    assert quantized.options["precision"] == "int8"
    assert np.abs(quantized.probs - reference.probs).mean() < 0.02
    assert (quantized.mask == reference.mask).mean() > 0.97


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
    # an int8 bundle still runs in float32 (batch norm folded, weights as stored)
    assert np.abs(iterseg.two_stage(image, again, patches=4).probs
                  - iterseg.two_stage(image, bundle, patches=4).probs).mean() < 0.01


def test_int8_without_calibration_says_how_to_make_it():
    with pytest.raises(iterseg.ModelError, match="iterseg quantize"):
        iterseg.two_stage(blob_image(32, 32), small_bundle(), precision="int8")


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
