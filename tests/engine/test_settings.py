"""Settings: every bad value is an InputError naming the option, unknown names are listed with the
valid ones, and the plan resolves the defaults that depend on the image and the model."""
import math

import numpy as np
import pytest

import iterseg
from iterseg.engine.settings import (
    DEFAULT_MAX_OVERLAP,
    DEFAULT_PATCHES,
    Settings,
    check_windows,
    default_window_side,
)
from iterseg.errors import InputError

BAD_VALUES = [  # option, value, words of the message
    ("patches", -1, "patches must be an integer >= 0, got -1"),
    ("patches", 2.5, "patches must be an integer >= 0, got 2.5"),
    ("patches", True, "patches must be an integer"),
    ("patches", "many", "patches must be an integer >= 0, got 'many'"),
    ("patch_size", 0, "patch_size must be an integer >= 1"),
    ("stride", -4, "stride must be an integer >= 1"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("context", -1, "context must be an integer >= 0"),
    ("context", 1.5, "context must be an integer >= 0"),
    ("rounds", 0, "rounds must be an integer >= 1"),
    ("budget", 0, "budget must be a finite number > 0"),
    ("budget", -1, "budget must be a finite number > 0"),
    ("budget", math.inf, "budget must be a finite number > 0"),
    ("budget", math.nan, "budget must be a finite number > 0"),
    ("budget", "0.2", "budget must be a finite number > 0"),
    ("budget_gmacs", 0.0, "budget_gmacs must be a finite number > 0"),
    ("threshold", 1.5, "threshold must be a number >= 0 and <= 1"),
    ("threshold", -0.1, "threshold must be a number >= 0 and <= 1"),
    ("max_overlap", 1, "max_overlap must be a number >= 0 and < 1"),
    ("max_overlap", -0.1, "max_overlap must be a number >= 0 and < 1"),
    ("score", "entropy", "score must be one of mean, uncertainty, got 'entropy'"),
    ("score", "margin", "score must be one of mean, uncertainty, got 'margin'"),  # merged into 'uncertainty'
    ("precision", "fp16", "precision must be one of fp32, bf16, int8, got 'fp16'"),
]


@pytest.mark.parametrize("name, value, words", BAD_VALUES, ids=lambda v: str(v)[:20])
def test_bad_values_raise_input_error_naming_the_option(name, value, words):
    with pytest.raises(InputError) as error:
        Settings.from_options(**{name: value})
    assert words in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name, value, words", BAD_VALUES[:10:3], ids=lambda v: str(v)[:20])
def test_the_api_checks_its_options_before_running(bundle, image, name, value, words):
    with pytest.raises(InputError, match=words.split(",")[0]):
        iterseg.two_stage(image, bundle, **{name: value})


def test_unknown_options_are_listed_with_the_valid_ones():
    with pytest.raises(InputError) as error:
        Settings.from_options(patchez=3, sizes=2, patches=4)
    message = str(error.value)
    assert message.startswith("unknown option(s) patchez, sizes; valid options: ")
    for name in Settings.__dataclass_fields__:
        assert name in message.split("valid options: ")[1]


def test_none_means_the_default():
    assert Settings.from_options(patches=None, context=None, rounds=None, precision=None) == Settings()
    assert Settings.from_options(patches=0, threshold=0, max_overlap=0.0).patches == 0


def test_the_plan_resolves_the_defaults():
    plan = Settings().plan((2048, 2048), channels=1, size_multiple=16)
    assert plan.settings.patches == DEFAULT_PATCHES == 16 and plan.settings.score == "mean"
    assert (plan.size, plan.stride, plan.max_overlap, plan.blend) == (128, 128, None, False)
    assert Settings().plan((64, 64), channels=3, size_multiple=4).settings.score == "uncertainty"
    sliding = Settings(patch_size=48, stride=16).plan((200, 300), 1, 16)
    assert (sliding.size, sliding.stride, sliding.max_overlap, sliding.blend) == (48, 16, DEFAULT_MAX_OVERLAP, True)
    assert Settings(patch_size=48, stride=16, max_overlap=0.5).plan((200, 300), 1, 16).max_overlap == 0.5


def test_a_budget_or_threshold_lifts_the_default_cap():
    assert Settings(budget=0.2).plan((100, 100), 1, 4).settings.patches is None
    assert Settings(threshold=0.5).plan((100, 100), 1, 4).settings.patches is None
    assert Settings(threshold=0.5, patches=3).plan((100, 100), 1, 4).settings.patches == 3
    # without a count the window side still follows the default grid
    assert Settings(budget=0.2).plan((100, 100), 1, 4).size == default_window_side((100, 100), 16, 4) == 8


def test_mean_needs_a_binary_model():
    with pytest.raises(InputError, match="score 'mean' needs a binary model; use --score uncertainty"):
        Settings(score="mean").plan((64, 64), channels=3, size_multiple=4)


def test_the_tightest_budget_counts():
    plan = Settings(budget=0.5, budget_gmacs=2.0).plan((64, 64), 1, 4)
    assert plan.budget_macs(10e9) == 2e9 and plan.budget_macs(1e9) == 0.5e9
    assert Settings().plan((64, 64), 1, 4).budget_macs(1e9) is None


def test_reports_leave_out_compile_and_add_the_resolved_geometry():
    plan = Settings(compile=True, stride=8).plan((64, 64), 1, 4)
    report = plan.report()
    assert "compile" not in report and report["patch_size"] == 4 and report["stride"] == 8
    assert report["blended"] is False and report["max_overlap"] is None and report["patches"] == 16


@pytest.mark.parametrize("shape, patches, multiple, side", [
    ((2048, 2048), 16, 16, 128), ((572, 765), 16, 16, 48), ((100, 30), 7, 16, 16), ((10, 10), 0, 4, 12)])
def test_default_window_side(shape, patches, multiple, side):
    assert default_window_side(shape, patches, multiple) == side  # ceil(max(H, W) / N_p) up to the multiple


@pytest.mark.parametrize("windows, message", [
    (np.zeros((2, 3), np.int64), "shape"),
    (np.array([[0, 0, 16, 16], [0, 16, 32, 32]]), "same"),
    (np.array([[0, 0, 0, 0]]), "positive"),
    (np.array([[90, 0, 16, 16]]), "inside the 96 x 128 image"),
    (np.array([[-1, 0, 16, 16]]), "inside"),
    (np.array([[0.0, 0, 16, 16]]), "integer"),
])
def test_bad_explicit_windows_are_refused(bundle, image, windows, message):
    with pytest.raises(InputError, match=message):
        check_windows(windows, (96, 128))
    with pytest.raises(InputError, match=message):
        iterseg.two_stage(image, bundle, windows=windows)


def test_explicit_windows_come_back_as_int64():
    windows = check_windows(np.array([[0, 0, 8, 8], [4, 4, 8, 8]], np.int32), (16, 16))
    assert windows.dtype == np.int64 and windows.tolist() == [[0, 0, 8, 8], [4, 4, 8, 8]]
    assert check_windows(np.empty((0, 4), np.int64), (16, 16)).shape == (0, 4)


def test_the_bundles_window_side_makes_patches_only_count_windows(bundle, image):
    import dataclasses

    import iterseg

    fixed = dataclasses.replace(bundle, window=24)
    for n in (2, 8):
        result = iterseg.two_stage(image, fixed, patches=n)
        assert result.options["patch_size"] == 24 and len(result.windows) == n
    assert iterseg.two_stage(image, fixed, patches=2, patch_size=40).options["patch_size"] == 40  # the option wins
    assert iterseg.two_stage(image, bundle, patches=2).options["patch_size"] == 64  # the paper's rule: 128 / 2
    assert iterseg.api.Segmenter(fixed).macs(96, 128, patches=8)["stage2"] == 8 * iterseg.engine.cost.count_macs(
        fixed.s2.config, 24, 24)


def test_tied_windows_follow_the_count_even_for_a_model_with_a_side():
    tied = Settings(patches=8, patch_size="tied").check().plan((200, 100), 1, 4, window=48)
    assert tied.size == 28  # ceil(200 / 8) = 25, rounded up to the multiple 4
    assert Settings(patches=8).plan((200, 100), 1, 4, window=48).size == 48
    assert Settings(patch_size="tied").plan((200, 100), 1, 4, window=48, default_patches=4).size == 52
    with pytest.raises(InputError, match="patch_size must be an integer >= 1"):
        Settings(patch_size="loose").check()


def test_the_models_default_count_applies_only_when_nothing_else_decides():
    assert Settings().plan((64, 64), 1, 4, default_patches=3).settings.patches == 3
    assert Settings(patches=5).plan((64, 64), 1, 4, default_patches=3).settings.patches == 5
    assert Settings(budget=0.2).plan((64, 64), 1, 4, default_patches=3).settings.patches is None
    assert Settings().plan((64, 64), 1, 4).settings.patches == DEFAULT_PATCHES


def test_one_function_resolves_the_default_window_count(monkeypatch, bundle, tmp_path, capsys):
    """resolve_patches is the only owner: the plan, `iterseg flops` and the model card all follow it
    (a module keeping its own copy of DEFAULT_PATCHES would still say 16 here)."""
    from iterseg.cards import card_rows, model_card
    from iterseg.cli import main
    from iterseg.engine import settings
    from iterseg.model.store import save_bundle

    assert settings.resolve_patches(None) == DEFAULT_PATCHES and settings.resolve_patches(3) == 3
    monkeypatch.setattr(settings, "DEFAULT_PATCHES", 7)
    assert bundle.patches is None
    assert Settings().plan((64, 64), 1, 4).settings.patches == 7
    assert card_rows([model_card(bundle)])[1][6].startswith("7 x ")
    path = tmp_path / "small.pt"
    save_bundle(bundle, path, half=False)
    assert main(["flops", "--size", "64x64", "--model", str(path)]) == 0
    assert ", 7 patches (" in capsys.readouterr().out
