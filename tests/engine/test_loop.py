"""The one loop: its identities (refine none = stage 1, refine all = baseline) and the promise that a
streamed tiled TIFF and the same image in memory give the same result for every option."""
import numpy as np
import pytest

import iterseg
from iterseg.engine.source import ArraySource, TiffSource

from synthetic import blob_image, conditioned_bundle, small_bundle, write_tiled

OPTIONS = [
    {"patches": 6},
    {"patches": 8, "rounds": 3},
    {"patches": 10, "patch_size": 40, "stride": 20},
    {"patches": 6, "patch_size": 40, "stride": 16, "max_overlap": 0.5, "rounds": 2},
    {"budget": 0.4, "context": 8, "rounds": 2, "stride": 30, "patch_size": 48},
    {"budget_gmacs": 0.05, "patch_size": 32},
    {"threshold": 0.3, "score": "uncertainty", "patches": 40},
    {"patches": 5, "score": "uncertainty", "context": 12},
    {"patches": 0},
]


@pytest.fixture(scope="module")
def picture():
    return blob_image(203, 317, seed=5)


@pytest.fixture(scope="module")
def tiff_path(tmp_path_factory, picture):
    return write_tiled(tmp_path_factory.mktemp("stream") / "t.tif", picture, tile=(64, 64))


@pytest.mark.parametrize("conditioned", [False, True], ids=["plain", "conditioned"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_streamed_equals_in_memory_for_every_option(picture, tiff_path, options, conditioned):
    bundle = conditioned_bundle(with_reference=False)[0] if conditioned else small_bundle()
    memory = iterseg.two_stage(picture, bundle, **options)
    streamed = iterseg.two_stage(tiff_path, bundle, stream=True, **options)
    assert streamed.options["streamed"] and not memory.options["streamed"]
    np.testing.assert_array_equal(streamed.windows, memory.windows)
    np.testing.assert_allclose(streamed.scores, memory.scores, atol=1e-6)
    height, width = picture.shape[:2]
    probs = streamed.probs_at(np.arange(height), np.arange(width))
    np.testing.assert_allclose(probs[0], memory.probs, atol=1e-5)  # float rounding of two resamplers
    decided = np.abs(memory.probs - 0.5) > 1e-5
    np.testing.assert_array_equal(streamed.mask_at(np.arange(height), np.arange(width))[decided],
                                  memory.mask[decided])
    assert streamed.macs == memory.macs
    assert [r["windows"] for r in streamed.options["rounds_log"]] == [
        r["windows"] for r in memory.options["rounds_log"]]


def test_refining_no_window_reproduces_upsampled_stage1(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=0)
    source = ArraySource(image, 3)
    from iterseg.engine.coarse import stage1
    coarse = stage1(source, bundle.s1, bundle.s1_scale, bundle.mean, bundle.std)[0]
    np.testing.assert_array_equal(result.probs, coarse.full()[0])
    assert result.macs["stage2"] == 0 and len(result.windows) == 0


@pytest.mark.parametrize("shape, size", [((96, 128), 32), ((100, 75), 24), ((64, 64), 64)])
def test_refining_every_window_with_context_reproduces_the_baseline(bundle, shape, size):
    picture = blob_image(*shape, seed=2)
    context = bundle.s2.config.receptive_radius + bundle.s2.config.size_multiple
    every = iterseg.two_stage(picture, bundle, patches=10 ** 6, patch_size=size, context=context)
    base = iterseg.baseline(picture, bundle)
    np.testing.assert_allclose(every.probs, base.probs, atol=1e-5)
    assert base.macs["ratio"] == 1.0 and every.macs["stage2"] >= base.macs["baseline"]  # context is paid for


def test_streamed_refine_all_reproduces_the_baseline(tmp_path, bundle):
    picture = blob_image(150, 190, seed=4)
    path = write_tiled(tmp_path / "t.tif", picture, tile=(32, 32))
    context = bundle.s2.config.receptive_radius + bundle.s2.config.size_multiple
    every = iterseg.two_stage(path, bundle, stream=True, patches=10 ** 6, patch_size=48, context=context)
    base = iterseg.baseline(picture, bundle)
    np.testing.assert_allclose(every.probs_at(np.arange(150), np.arange(190)), base.probs[None], atol=1e-5)


def test_rounds_rescore_the_merged_map_and_never_refine_a_window_twice(bundle):
    picture = blob_image(160, 224, seed=9)
    result = iterseg.two_stage(picture, bundle, patches=9, patch_size=32, rounds=3)
    log = result.options["rounds_log"]
    assert [len(r["windows"]) for r in log] == [3, 3, 3]
    chosen = [tuple(w) for r in log for w in r["windows"]]
    assert len(set(chosen)) == 9 and chosen == [tuple(w) for w in result.windows]
    one_round = iterseg.two_stage(picture, bundle, patches=9, patch_size=32)
    assert sum(r["macs"] for r in log) == one_round.macs["stage2"]


def test_a_source_object_is_used_as_it_is_and_left_open(tmp_path, bundle, image):
    path = write_tiled(tmp_path / "t.tif", image, tile=(32, 32))
    with TiffSource(path, 3) as source:
        first = iterseg.two_stage(source, bundle, patches=3)
        second = iterseg.two_stage(source, bundle, patches=3)  # still open
        assert source.tiles_read >= first.tiles_read > 0
    np.testing.assert_array_equal(first.windows, second.windows)
