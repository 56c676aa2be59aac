"""The public API: load, Segmenter, Result (one type for images in memory and streamed ones), the lazy
package namespace, and determinism when threads share a Segmenter."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import iterseg
from iterseg.engine.loop import Result
from iterseg.model.runtime import check_precision

from synthetic import blob_image, conditioned_bundle, write_tiled

# Threads share the networks; oneDNN may pick other kernels (another summation order) for another
# thread count, so probabilities may differ in their last bits, never by more than this.
THREAD_TOLERANCE = 1e-6


def test_the_result_follows_the_contract(bundle, image):
    result = iterseg.Segmenter(bundle).predict(image, patches=4)
    assert type(result) is iterseg.Result is Result
    assert result.probs.shape == result.mask.shape == result.shape == image.shape[:2]
    assert result.probs.dtype == np.float32 and 0 <= result.probs.min() and result.probs.max() <= 1
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1}
    assert result.windows.dtype == np.int64 and result.windows.shape == (4, 4) and result.scores.shape == (4,)
    assert set(result.macs) >= {"stage1", "stage2", "total", "baseline", "ratio"}
    assert all(isinstance(result.macs[k], int) for k in ("stage1", "stage2", "total", "baseline"))
    assert result.macs["total"] == result.macs["stage1"] + result.macs["stage2"]
    assert result.macs["ratio"] == pytest.approx(result.macs["total"] / result.macs["baseline"])
    assert set(result.seconds) == {"stage1", "select", "stage2", "merge", "total"}
    assert result.seconds["total"] >= result.seconds["stage1"] + result.seconds["stage2"]
    assert result.view.shape == (12, 16, 3) and result.tiles_read is None and not result.options["streamed"]


def test_a_result_at_any_pixels_equals_its_whole_map(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=5, patch_size=16)
    rows, cols = np.arange(3, 90, 4), np.arange(0, 128, 7)
    np.testing.assert_array_equal(result.probs_at(rows, cols)[0], result.probs[rows][:, cols])
    np.testing.assert_array_equal(result.mask_at(rows, cols), result.mask[rows][:, cols])
    assert result.probs is result.probs  # built once


def test_load_and_predict_from_a_path(bundle_path, image_path):
    segmenter = iterseg.load(bundle_path)
    auto = str(check_precision("auto"))  # fp32 or bf16, by the CPU (or $ITERSEG_AUTO_PRECISION)
    backend = str(segmenter.defaults["backend"])  # torch or openvino, by what is installed and measured
    assert repr(segmenter) == (f"Segmenter({str(bundle_path)!r}, classes=['background', 'foreground'], "
                               f"precision={auto!r}, backend={backend!r})")
    result = segmenter.predict(image_path, patches=4)
    base = segmenter.predict_baseline(image_path)
    assert result.mask.shape == base.mask.shape == (96, 128) and len(result.windows) == 4
    assert base.macs["ratio"] == 1.0 and base.macs["total"] == base.macs["baseline"] and len(base.windows) == 0
    assert base.options["baseline"] and base.options["kind"] == "s2"
    whole = segmenter.predict_baseline(image_path, precision="fp32").probs  # exact: the reference precision
    np.testing.assert_allclose(segmenter.predict_baseline(image_path, chunk=48, batch_size=2, precision="fp32").probs,
                               whole, atol=1e-5)


def test_the_baselines_tile_option_is_a_deprecated_name_of_chunk(bundle, image):
    """tile= named the baseline's chunks before `tile` came to mean a TIFF's storage unit only."""
    segmenter = iterseg.Segmenter(bundle, precision="fp32")
    chunked = segmenter.predict_baseline(image, chunk=48)
    with pytest.warns(DeprecationWarning, match="chunk=") as warned:
        old = segmenter.predict_baseline(image, tile=48)
    assert warned[0].filename == __file__  # points at the caller's line
    np.testing.assert_array_equal(old.probs, chunked.probs)
    assert old.options["chunk"] == 48 and "tile" not in old.options
    with pytest.warns(DeprecationWarning) as warned:
        assert iterseg.baseline(image, bundle, tile=48).options["chunk"] == 48
    assert warned[0].filename == __file__
    with pytest.warns(DeprecationWarning), pytest.raises(iterseg.InputError, match="chunk=32 and .* tile=48"):
        segmenter.predict_baseline(image, chunk=32, tile=48)


def test_the_segmenter_precision_is_a_default_that_calls_can_override(bundle, image):
    segmenter = iterseg.Segmenter(bundle, precision="bf16")
    assert segmenter.predict(image, patches=2).options["precision"] == "bf16"
    assert segmenter.predict(image, patches=2, precision="fp32").options["precision"] == "fp32"
    assert segmenter.predict_baseline(image).options["precision"] == "bf16"


def test_the_segmenter_streams_with_its_precision(tmp_path, bundle):
    path = write_tiled(tmp_path / "t.tif", blob_image(128, 128, seed=11), tile=(64, 64))
    segmenter = iterseg.Segmenter(bundle, precision="bf16")
    result = segmenter.predict_tiled(path, patches=2)
    assert type(result) is Result and result.options["precision"] == "bf16" and result.options["streamed"]
    assert result.tiles_read > 0 and result.shape == (128, 128)
    with pytest.raises(iterseg.InputError, match="patches"):
        segmenter.predict_tiled(path, patches=-1)


@pytest.mark.parametrize("height, width, options", [
    (256, 256, {"patches": 16}),
    (96, 128, {"patches": 5, "patch_size": 24}),
    (96, 128, {"patches": 3, "patch_size": 30, "context": 6}),  # window and box off the size multiple
    (70, 200, {"patches": 4, "patch_size": "tied", "context": 3}),
    (40, 300, {"patches": 2, "patch_size": 64}),  # the window clipped to the image's height
    (96, 128, {"patches": 0}),
    (96, 128, {}),  # the model's defaults
])
def test_the_cost_of_a_size_without_an_image_is_the_cost_of_a_run(bundle, height, width, options):
    """Segmenter.macs and a run both take window -> box -> MACs from engine/infer.planned_windows."""
    segmenter = iterseg.Segmenter(bundle)
    result = segmenter.predict(blob_image(height, width), **options)
    assert segmenter.macs(height, width, **options) == result.macs


def test_the_cost_of_a_conditioned_bundle_without_an_image_is_the_cost_of_a_run():
    segmenter = iterseg.Segmenter(conditioned_bundle()[0])
    options = {"patches": 3, "patch_size": 20, "context": 5}
    assert segmenter.macs(96, 128, **options) == segmenter.predict(blob_image(96, 128), **options).macs


def test_the_cost_of_a_size_without_an_image(bundle):
    segmenter = iterseg.Segmenter(bundle)
    result = segmenter.predict(blob_image(256, 256), patches=16)
    assert segmenter.macs(256, 256, patches=16) == result.macs
    assert segmenter.macs(256, 256, patches=10_000)["stage2"] == result.macs["baseline"]  # 16 x 16 windows of 16 px


def test_threads_sharing_a_segmenter_give_the_sequential_results(bundle):
    """Masks byte-identical; probabilities within THREAD_TOLERANCE (also under OMP_NUM_THREADS=1)."""
    segmenter = iterseg.Segmenter(bundle)
    images = [blob_image(60 + 8 * i, 90, seed=i) for i in range(12)]
    for precision in ("fp32", "bf16"):
        def predict(im, precision=precision):
            return segmenter.predict(im, patches=5, precision=precision)

        sequential = [predict(im) for im in images]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(predict, images))
        for one, other in zip(sequential, threaded, strict=True):
            np.testing.assert_array_equal(one.windows, other.windows)
            assert one.mask.tobytes() == other.mask.tobytes()
            np.testing.assert_allclose(one.probs, other.probs, rtol=0, atol=THREAD_TOLERANCE)


def test_the_package_namespace_is_lazy():
    assert set(iterseg.__all__) >= {"load", "Segmenter", "Result", "two_stage", "baseline", "InputError"}
    assert set(dir(iterseg)) == set(iterseg.__all__)
    with pytest.raises(AttributeError, match="no attribute 'pipeline'"):
        iterseg.pipeline  # noqa: B018 - the old modules are gone
    code = "import sys, iterseg; print('torch' in sys.modules, iterseg.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", iterseg.__version__], done.stderr


def test_load_rehearses_a_prediction_at_the_size_the_model_was_trained_on(tmp_path, bundle, monkeypatch):
    import dataclasses

    from iterseg.model.store import save_bundle
    seen = []
    real = iterseg.Segmenter.predict
    monkeypatch.setattr(iterseg.Segmenter, "predict",
                        lambda self, image, *args, **options: seen.append(np.shape(image)) or real(self, image, *args,
                                                                                                   **options))
    trained = dataclasses.replace(bundle, provenance={"stages": {"s2": {"image_shape": [72, 88]}}})
    assert trained.image_shape == (72, 88) and bundle.image_shape is None
    save_bundle(trained, tmp_path / "trained.pt", half=False)
    iterseg.load(tmp_path / "trained.pt")
    assert seen == [(72, 88, 3)]  # one blank image of the trained size, at the model's defaults
    iterseg.load(tmp_path / "trained.pt", warm_up=False)
    save_bundle(bundle, tmp_path / "unknown.pt", half=False)
    iterseg.load(tmp_path / "unknown.pt")
    huge = dataclasses.replace(bundle, provenance={"image_shape": [40000, 30000]})  # a slide model: not rehearsed
    save_bundle(huge, tmp_path / "huge.pt", half=False)
    iterseg.load(tmp_path / "huge.pt")
    assert seen == [(72, 88, 3)]
