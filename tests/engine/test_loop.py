"""The one loop: its identities (refine none = stage 1, refine all = baseline) and the promise that a
streamed tiled TIFF and the same image in memory give the same result for every option."""
import tracemalloc

import numpy as np
import pytest

import iterseg
from iterseg.engine.source import ArraySource, TiffSource

from synthetic import blob_image, bright_bundle, conditioned_bundle, disc_pair, small_bundle, write_tiled

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
    result = iterseg.two_stage(image, bundle, patches=0, precision="fp32")  # exact: the reference precision
    source = ArraySource(image, 3)
    from iterseg.engine.coarse import stage1
    coarse = stage1(source, bundle.s1, bundle.s1_scale, bundle.mean, bundle.std)[0]
    np.testing.assert_allclose(result.probs, coarse.full()[0], atol=1e-6)  # runners fold batch norm
    assert result.macs["stage2"] == 0 and len(result.windows) == 0


@pytest.mark.parametrize("context", [0, 8])
@pytest.mark.parametrize("shape, size", [((96, 128), 32), ((100, 75), 24), ((64, 64), 64)])
def test_refining_every_window_is_the_baseline_at_its_cost(bundle, shape, size, context):
    """Windows whose boxes would cost at least the whole image run as the whole image: refining every
    window gives the baseline, whatever the context, and costs what it costs."""
    picture = blob_image(*shape, seed=2)
    every = iterseg.two_stage(picture, bundle, patches=10 ** 6, patch_size=size, context=context, precision="fp32")
    base = iterseg.baseline(picture, bundle, precision="fp32")
    np.testing.assert_allclose(every.probs, base.probs, atol=1e-5)
    multiple = bundle.s2.config.size_multiple
    assert every.macs["stage2"] == base.macs["stage2"]
    assert every.options["s2_input"] == [-(-side // multiple) * multiple for side in shape]


def test_fewer_windows_than_the_whole_image_costs_run_as_windows(bundle):
    picture = blob_image(96, 128, seed=2)
    few = iterseg.two_stage(picture, bundle, patches=3, patch_size=32, precision="fp32")
    base = iterseg.baseline(picture, bundle, precision="fp32")
    assert few.options["s2_input"] == [32, 32] and few.macs["stage2"] == 3 * base.macs["stage2"] * 32 * 32 // (96 * 128)
    assert not np.allclose(few.probs, base.probs, atol=1e-3)


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


def test_only_the_chosen_windows_change_and_they_are_the_top_of_the_grid(bundle, image):
    s1 = iterseg.two_stage(image, bundle, patches=0)
    result = iterseg.two_stage(image, bundle, patches=5, patch_size=16)
    changed = np.zeros(image.shape[:2], bool)
    for y, x, h, w in result.windows:
        changed[y:y + h, x:x + w] = True
    np.testing.assert_array_equal(result.probs[~changed], s1.probs[~changed])
    assert result.windows.dtype == np.int64 and result.windows.shape == (5, 4)
    every = iterseg.two_stage(image, bundle, patches=10_000, patch_size=16)  # the whole grid, best first
    assert result.windows.tolist() == every.windows[:5].tolist()
    assert (np.diff(every.scores) <= 0).all() and result.scores.tolist() == every.scores[:5].tolist()


def test_explicit_windows_are_refined_instead_of_chosen(bundle, image):
    chosen = iterseg.two_stage(image, bundle, patches=4, patch_size=16)
    given = iterseg.two_stage(image, bundle, windows=chosen.windows[::-1].copy())
    np.testing.assert_array_equal(given.windows, chosen.windows[::-1])
    np.testing.assert_array_equal(given.probs, chosen.probs)
    assert given.macs == chosen.macs and np.isnan(given.scores).all()
    none = iterseg.two_stage(image, bundle, windows=np.empty((0, 4), np.int64))
    np.testing.assert_array_equal(none.probs, iterseg.two_stage(image, bundle, patches=0).probs)


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 2), (5, 7)])
def test_tiny_and_thin_images(bundle, shape):
    result = iterseg.two_stage(blob_image(*shape, seed=2), bundle, patches=4)
    assert result.probs.shape == result.mask.shape == shape and len(result.windows) >= 1
    assert (result.windows[:, 0] + result.windows[:, 2] <= shape[0]).all()
    assert (result.windows[:, 1] + result.windows[:, 3] <= shape[1]).all()


def test_more_patches_than_windows_refines_all_and_says_so(bundle, image):
    result = iterseg.two_stage(image, bundle, patches=500, patch_size=32)
    assert len(result.windows) == 3 * 4
    assert "500 patches asked, the grid has only 12 windows: all refined" in result.notes


def test_a_multiclass_bundle_gives_softmax_probabilities_and_scores_by_uncertainty():
    bundle = small_bundle(out_channels=3)
    result = iterseg.two_stage(blob_image(64, 80), bundle, patches=3)
    assert result.probs.shape == (3, 64, 80) and result.options["score"] == "uncertainty"
    np.testing.assert_allclose(result.probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(result.mask, result.probs.argmax(0))
    assert ((0 <= result.scores) & (result.scores <= 1)).all()


def test_the_batch_size_the_run_used_is_reported(bundle, image):
    automatic = iterseg.two_stage(image, bundle, patches=4, patch_size=16)
    assert automatic.options["batch_size"] == 16 and automatic.options["s2_input"] == [16, 16]
    explicit = iterseg.two_stage(image, bundle, patches=4, patch_size=16, batch_size=3)
    assert explicit.options["batch_size"] == 3
    np.testing.assert_array_equal(explicit.mask, automatic.mask)
    assert iterseg.two_stage(image, bundle, patches=0).options["batch_size"] is None


@pytest.mark.parametrize("budget", [0.05, 0.12, 0.3, 0.9])
def test_the_budget_is_never_exceeded(bundle, budget):
    picture = blob_image(96, 128, seed=12)
    result = iterseg.two_stage(picture, bundle, patch_size=16, budget=budget)
    assert result.macs["total"] <= budget * result.macs["baseline"]
    one_more = result.macs["total"] + result.macs["stage2"] / max(1, len(result.windows))
    assert len(result.windows) == 48 or one_more > budget * result.macs["baseline"]  # it spent what it could
    gmacs = iterseg.two_stage(picture, bundle, patch_size=16, budget_gmacs=result.macs["total"] / 1e9)
    assert gmacs.macs["total"] <= result.macs["total"] and len(gmacs.windows) == len(result.windows)


def test_a_budget_below_stage1_refines_nothing_and_says_why(bundle):
    result = iterseg.two_stage(blob_image(96, 128, seed=12), bundle, patch_size=16, budget=0.001)
    assert len(result.windows) == 0 and "budget allows after stage 1 (0)" in result.notes[-1]


@pytest.mark.parametrize("score, threshold", [("mean", 0.3), ("mean", 0.9), ("uncertainty", 0.2)])
def test_a_threshold_refines_exactly_the_windows_scoring_above_it(score, threshold):
    bundle = bright_bundle()  # its stage-1 map is sure of some windows and unsure of others
    picture = disc_pair(96, 128, seed=12)[0]
    grid = iterseg.two_stage(picture, bundle, patches=10_000, patch_size=16, score=score)  # every window
    expected = {tuple(w) for w, s in zip(grid.windows, grid.scores, strict=True) if s > threshold}
    assert 0 < len(expected) < len(grid.windows)
    result = iterseg.two_stage(picture, bundle, patch_size=16, score=score, threshold=threshold)
    assert {tuple(w) for w in result.windows} == expected and (result.scores > threshold).all()
    assert f"above threshold {threshold:g} ({score})" in result.notes[-1]
    capped = iterseg.two_stage(picture, bundle, patch_size=16, score=score, threshold=threshold, patches=2)
    assert capped.windows.tolist() == result.windows[:2].tolist()


def test_the_first_round_takes_what_a_single_round_takes_first(bundle):
    picture = blob_image(96, 128, seed=12)
    rounds = iterseg.two_stage(picture, bundle, patches=9, patch_size=16, rounds=3)
    one_shot = iterseg.two_stage(picture, bundle, patches=9, patch_size=16)
    assert rounds.windows[:3].tolist() == one_shot.windows[:3].tolist()  # the least certain of stage 1


@pytest.mark.parametrize("max_overlap", [0.0, 0.25, 0.5])
def test_overlapping_windows_share_at_most_the_allowed_area(bundle, max_overlap):
    from iterseg.engine.selection import overlap_fraction
    result = iterseg.two_stage(blob_image(96, 128, seed=12), bundle, patches=12, patch_size=32, stride=8,
                               max_overlap=max_overlap)
    windows = result.windows
    assert len(windows) > 1
    for i in range(len(windows)):
        assert overlap_fraction(windows[i], np.delete(windows, i, axis=0)).max() <= max_overlap + 1e-12
    assert result.options["blended"] and result.options["max_overlap"] == max_overlap


def test_blending_identical_outputs_leaves_the_map_unchanged():
    """S1 = S2 at full scale: every blended window gives the map it replaces, so no seam anywhere."""
    from iterseg.model.bundle import Bundle
    net = small_bundle().s2
    same = Bundle(s1=net, s2=net, mean=(0.5,) * 3, std=(0.25,) * 3, s1_scale=1.0)
    picture = blob_image(96, 128, seed=12)
    base = iterseg.baseline(picture, same)
    radius = net.config.receptive_radius
    result = iterseg.two_stage(picture, same, patches=30, patch_size=24, stride=8, max_overlap=0.9, context=radius)
    assert result.options["blended"] and len(result.windows) > 10
    np.testing.assert_allclose(result.probs, base.probs, atol=1e-5)


def test_the_baseline_in_chunks_equals_it_whole(bundle):
    picture = blob_image(150, 170, seed=5)
    whole = iterseg.baseline(picture, bundle)
    chunked = iterseg.baseline(picture, bundle, chunk=48)
    np.testing.assert_allclose(chunked.probs, whole.probs, atol=1e-5)
    assert whole.options["chunk"] is None and chunked.options["chunk"] == 48 and chunked.macs == whole.macs
    assert whole.windows.shape == (0, 4) and whole.seconds["select"] == whole.seconds["merge"] == 0


@pytest.mark.parametrize("options", [{"budget": 0.2, "patch_size": 16}, {"threshold": 0.4, "patches": 3}])
def test_a_streamed_run_notes_what_the_in_memory_run_notes(picture, tiff_path, options):
    bundle = small_bundle()
    memory = iterseg.two_stage(picture, bundle, **options)
    streamed = iterseg.two_stage(tiff_path, bundle, stream=True, **options)
    assert streamed.notes == memory.notes and streamed.notes


def test_streaming_with_a_pyramid_stays_close(tmp_path, bundle):
    picture = blob_image(512, 384, seed=7)
    path = write_tiled(tmp_path / "p.tif", picture, tile=(64, 64), pyramid=True)
    memory = iterseg.two_stage(picture, bundle, patches=6, patch_size=64)
    streamed = iterseg.two_stage(path, bundle, stream=True, patches=6, patch_size=64)
    assert "pyramid level 3" in streamed.notes[0]
    # levels halved three times (uint8 each time) instead of one 1/8 INTER_AREA: stage 1 sees almost
    # the same pixels, so the stage-1 map differs by little and most windows agree
    s1_memory = iterseg.two_stage(picture, bundle, patches=0).probs
    s1_streamed = iterseg.two_stage(path, bundle, stream=True, patches=0)
    assert np.abs(s1_streamed.probs_at(np.arange(512), np.arange(384))[0] - s1_memory).max() < 0.02
    assert len(set(map(tuple, streamed.windows)) & set(map(tuple, memory.windows))) >= 5
    assert (streamed.mask_at(np.arange(512), np.arange(384)) == memory.mask).mean() > 0.99


def test_only_the_tiles_of_the_chosen_windows_are_read_at_level_0(tmp_path, bundle):
    from iterseg.engine.infer import context_boxes
    picture = blob_image(512, 512, seed=8)
    path = write_tiled(tmp_path / "p.tif", picture, tile=(32, 32), pyramid=True)
    result = iterseg.two_stage(path, bundle, stream=True, patches=3, patch_size=48)
    boxes, _ = context_boxes(result.windows, 0, bundle.s2.config.size_multiple, (512, 512))
    tiles = {(ty, tx) for y, x, h, w in boxes for ty in range(y // 32, (y + h - 1) // 32 + 1)
             for tx in range(x // 32, (x + w - 1) // 32 + 1)}
    assert result.tiles_read == len(tiles) < (512 // 32) ** 2 // 10


def test_streaming_memory_grows_with_the_width_not_the_height(tmp_path, bundle):
    """Without a pyramid the stage-1 view is built from strips: NumPy never holds the image, and
    memory grows with the width (one strip), not the height; the mask is written tile by tile."""
    from iterseg.disk.pyramid import write_mask_pyramid
    picture = blob_image(4096, 768, seed=9)
    path = write_tiled(tmp_path / "big.tif", picture, tile=(256, 256))
    full_float = picture.size * 4
    del picture
    tracemalloc.start()
    try:
        result = iterseg.two_stage(path, bundle, stream=True, patches=8, patch_size=128)
        write_mask_pyramid(tmp_path / "mask.tif", result, bundle.num_classes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * full_float, f"peak {peak / 2**20:.0f} MB for a {full_float / 2**20:.0f} MB float image"
