"""two_stage_inference: users' own networks (torch modules, plain functions, a MONAI UNet) in the one
engine. Its identities: refining every window reproduces the fine network's whole-image output, refining
none reproduces the upsampled coarse output."""
import cv2
import numpy as np
import pytest
import torch
from torch import nn

import iterseg
from iterseg.custom import two_stage_inference
from iterseg.errors import InputError

H, W = 64, 80


def conv_net(out_channels=1, kernel=3, seed=0):
    """Two convolutions (3x3: receptive radius 2) with random weights, in eval mode."""
    torch.manual_seed(seed)
    pad = kernel // 2
    return nn.Sequential(nn.Conv2d(3, 6, kernel, padding=pad), nn.ReLU(),
                         nn.Conv2d(6, out_channels, kernel, padding=pad)).eval()


def whole(net, x, softmax=False):
    """The network's own probabilities over the whole (C, H, W) tensor: (H, W) or (K, H, W)."""
    with torch.no_grad():
        logits = net(x[None])[0]
    return (torch.softmax(logits, 0) if softmax else torch.sigmoid(logits)[0]).numpy()


def upsampled_coarse(net, x, scale, softmax=False):
    """What stage 1 should give: INTER_AREA down, the network, INTER_LINEAR back up."""
    h1, w1 = round(x.shape[1] * scale), round(x.shape[2] * scale)
    small = cv2.resize(x.permute(1, 2, 0).numpy(), (w1, h1), interpolation=cv2.INTER_AREA)
    probs = whole(net, torch.from_numpy(small).permute(2, 0, 1), softmax)
    probs = probs[None] if probs.ndim == 2 else probs
    up = cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (x.shape[2], x.shape[1]),
                    interpolation=cv2.INTER_LINEAR).reshape(x.shape[1], x.shape[2], -1)
    return up.transpose(2, 0, 1).squeeze(0)


@pytest.fixture
def x():
    return torch.randn(3, H, W)  # already "normalised": negative values are kept as they are


def test_full_refinement_reproduces_the_fine_network(x):
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    result = two_stage_inference(x, coarse, fine, patches=10 ** 6, patch_size=16, context=2)
    assert len(result.windows) == (H // 16) * (W // 16)
    np.testing.assert_allclose(result.probs, whole(fine, x), atol=1e-5)
    assert result.probs.dtype == np.float32 and result.mask.shape == (H, W)


def test_pointwise_fine_network_needs_no_context(x):
    fine = conv_net(kernel=1, seed=3)
    result = two_stage_inference(x[None], conv_net(seed=1), fine, patches=10 ** 6, patch_size=20, batch_size=3)
    np.testing.assert_allclose(result.probs, whole(fine, x), atol=1e-5)


def test_refining_no_window_reproduces_the_upsampled_coarse_output(x):
    coarse = conv_net(seed=1)
    result = two_stage_inference(x, coarse, conv_net(seed=2), patches=0, scale=0.25)
    assert len(result.windows) == 0 and result.macs["stage2"] == 0
    np.testing.assert_allclose(result.probs, upsampled_coarse(coarse, x, 0.25), atol=1e-5)


def test_probabilities_and_logits_give_the_same_result(x):
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    options = {"patches": 6, "patch_size": 16, "context": 2}
    logits = two_stage_inference(x, coarse, fine, **options)
    probs = two_stage_inference(x, nn.Sequential(coarse, nn.Sigmoid()), nn.Sequential(fine, nn.Sigmoid()),
                                outputs="probs", **options)
    mixed = two_stage_inference(x, coarse, nn.Sequential(fine, nn.Sigmoid()), outputs=("logits", "probs"),
                                **options)
    for other in (probs, mixed):
        np.testing.assert_array_equal(other.windows, logits.windows)
        np.testing.assert_allclose(other.probs, logits.probs, atol=1e-6)


def test_multiclass_softmax_networks(x):
    coarse, fine = conv_net(3, seed=1), conv_net(3, seed=2)
    result = two_stage_inference(x, coarse, fine, patches=10 ** 6, patch_size=32, context=2)
    expected = whole(fine, x, softmax=True)
    assert result.probs.shape == (3, H, W)
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    np.testing.assert_array_equal(result.mask, expected.argmax(0))
    probs = two_stage_inference(x, nn.Sequential(coarse, nn.Softmax(1)), nn.Sequential(fine, nn.Softmax(1)),
                                outputs="probs", patches=10 ** 6, patch_size=32, context=2)
    np.testing.assert_allclose(probs.probs, result.probs, atol=1e-6)


def test_macs_of_modules_are_counted_by_fvcore_on_their_input_shapes(x):
    from fvcore.nn import FlopCountAnalysis
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    result = two_stage_inference(x, coarse, fine, patches=3, patch_size=16, context=2)

    def count(net, h, w):
        return int(FlopCountAnalysis(net, torch.zeros(1, 3, h, w)).unsupported_ops_warnings(False).total())

    macs = result.macs
    assert macs["stage1"] == count(coarse, H // 8, W // 8)
    assert macs["stage2"] == 3 * count(fine, 20, 20)  # 16 px windows with 2 px context
    assert macs["baseline"] == count(fine, H, W)
    assert macs["ratio"] == pytest.approx(macs["total"] / macs["baseline"])
    with pytest.raises(InputError, match="budget"):
        two_stage_inference(x, lambda t: coarse(t), fine, budget=0.5)
    budgeted = two_stage_inference(x, coarse, fine, budget=0.3, patch_size=16)
    assert budgeted.macs["total"] <= 0.3 * budgeted.macs["baseline"] and len(budgeted.windows) > 0


def test_macs_of_large_inputs_are_scaled_from_a_square(x, monkeypatch):
    from iterseg.engine import networks
    exact = two_stage_inference(x, conv_net(seed=1), conv_net(seed=2), patches=2).macs
    monkeypatch.setattr(networks, "COUNT_PIXELS", 32 * 32)
    monkeypatch.setattr(networks, "COUNT_SIDE", 32)
    scaled = two_stage_inference(x, conv_net(seed=1), conv_net(seed=2), patches=2)
    assert scaled.macs["baseline"] == exact["baseline"]  # convolutions: MACs proportional to pixels
    assert any("scaled from a" in note for note in scaled.notes)


def test_plain_functions_work_without_macs(x):
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    result = two_stage_inference(x, lambda t: coarse(t), lambda t: fine(t), patches=10 ** 6, patch_size=16,
                                 context=2)
    assert result.macs is None and not any("cost" in note for note in result.notes)  # no MACs, no cost warning
    np.testing.assert_allclose(result.probs, whole(fine, x), atol=1e-5)
    uncounted = two_stage_inference(x, coarse, fine, patches=2, count_macs=False)
    assert uncounted.macs is None and uncounted.options["count_seconds"] == 0
    with pytest.raises(InputError, match="count_macs=True"):
        two_stage_inference(x, coarse, fine, budget_gmacs=1.0, count_macs=False)


def test_a_module_fvcore_cannot_trace_runs_uncounted(x, monkeypatch):
    from iterseg.engine import networks

    def refuse(self, height, width):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(networks.NetworkConfig, "_trace", refuse)
    result = two_stage_inference(x, conv_net(seed=1), conv_net(seed=2), patches=2)
    assert result.macs is None and any("could not count" in note for note in result.notes)
    with pytest.raises(InputError, match="budget needs them"):
        two_stage_inference(x, conv_net(seed=1), conv_net(seed=2), budget=0.5)


def test_given_windows_are_refined(x):
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    windows = np.array([[0, 0, 16, 16], [40, 50, 16, 16]])
    result = two_stage_inference(x, coarse, fine, windows=windows, context=2)
    np.testing.assert_array_equal(result.windows, windows)
    expected = whole(fine, x)
    np.testing.assert_allclose(result.probs[40:56, 50:66], expected[40:56, 50:66], atol=1e-5)


def test_arrays_are_scaled_to_unit_range_and_mean_std_applied():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    tensor = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)
    options = {"patches": 5, "patch_size": 16, "context": 2}
    from_array = two_stage_inference(array, coarse, fine, mean=0.5, std=(0.2, 0.25, 0.3), **options)
    normalised = (tensor - 0.5) / torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    from_tensor = two_stage_inference(normalised, coarse, fine, **options)
    np.testing.assert_array_equal(from_array.windows, from_tensor.windows)
    np.testing.assert_allclose(from_array.probs, from_tensor.probs, atol=1e-5)


def test_size_multiple_pads_the_inputs(x):
    def strict(t):
        if t.shape[2] % 8 or t.shape[3] % 8:
            raise RuntimeError(f"sides must be multiples of 8, got {tuple(t.shape)}")
        return t.mean(1, keepdim=True)

    odd = x[:, :50, :70]
    result = two_stage_inference(odd, strict, strict, size_multiple=8, patches=4, patch_size=20)
    assert result.probs.shape == (50, 70) and len(result.windows) == 4
    with pytest.raises(InputError, match="size_multiple"):
        two_stage_inference(odd, strict, strict, patches=4, patch_size=20)


def test_training_mode_is_noted(x):
    coarse = conv_net(seed=1).train()
    result = two_stage_inference(x, coarse, conv_net(seed=2), patches=2)
    assert any("training mode" in note for note in result.notes)


def identity(t):
    return t[:, :1]


@pytest.mark.parametrize("call, message", [
    (lambda x: two_stage_inference(x[0], identity, identity), "(C, H, W)"),
    (lambda x: two_stage_inference(torch.stack([x, x]), identity, identity), "(1, C, H, W)"),
    (lambda x: two_stage_inference(np.zeros((2, 3, 8, 8)), identity, identity), "NumPy array"),
    (lambda x: two_stage_inference(x, identity, lambda t: t[:, :1, :-1]), "fine network returned shape"),
    (lambda x: two_stage_inference(x, identity, lambda t: t[:1, :1]), "fine network returned shape"),
    (lambda x: two_stage_inference(x, identity, lambda t: t[:, :1].numpy()), "must return a torch tensor"),
    (lambda x: two_stage_inference(x, identity, lambda t: t[:, :2]), "same K"),
    (lambda x: two_stage_inference(x, identity, identity, outputs="probs"), "outputs='logits'"),
    (lambda x: two_stage_inference(x, identity, identity, outputs="softmax"), "outputs must be"),
    (lambda x: two_stage_inference(x, identity, "net"), "fine must be a torch module"),
    (lambda x: two_stage_inference(x, identity, identity, scale=0), "scale must be"),
    (lambda x: two_stage_inference(x, identity, identity, scale=2), "scale must be"),
    (lambda x: two_stage_inference(x, identity, identity, size_multiple=0), "size_multiple must be"),
    (lambda x: two_stage_inference(x, identity, identity, std=(1, 0, 1)), "std must be"),
    (lambda x: two_stage_inference(x, identity, identity, mean=(1, 2)), "mean must be"),
    (lambda x: two_stage_inference(x, identity, identity, patches=-1), "patches must be"),
    (lambda x: two_stage_inference(x * float("nan"), identity, identity), "NaN"),
    (lambda x: two_stage_inference(x, identity, lambda t: t[:, 99]), "fine network failed"),
])
def test_bad_arguments_give_one_line_input_errors(x, call, message):
    with pytest.raises(InputError) as info:
        call(x)
    assert message in str(info.value) and "\n" not in str(info.value)


def nan_where_bright(t):
    """A network that overflows on some inputs: NaN logits where the input is above 1, else its first channel."""
    return torch.where(t[:, :1] > 1, torch.full_like(t[:, :1], float("nan")), t[:, :1])


@pytest.mark.parametrize("coarse, fine, role", [
    (nan_where_bright, identity, "coarse"),
    (identity, nan_where_bright, "fine"),
    (identity, lambda t: t[:, :1] / (t[:, :1] > 1), "fine"),  # infinity, not NaN
])
def test_a_network_returning_nan_or_infinity_is_an_error_that_names_it(x, coarse, fine, role):
    x = x.clone()
    x[:, 10:20, 10:20] = 3  # bright: past the zero-input probe, in the window chosen first
    with pytest.raises(InputError) as info:
        two_stage_inference(x, coarse, fine, patches=64, patch_size=16)
    assert f"the {role} network returned NaN or infinite values" in str(info.value) and "\n" not in str(info.value)


def test_exported_from_the_package():
    assert iterseg.two_stage_inference is two_stage_inference
    assert iterseg.api.two_stage_inference is two_stage_inference


@pytest.mark.slow  # seconds of training or a MONAI import: make test-slow / CI
def test_monai_unet():
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)

    def unet():  # two stride-2 levels: sides must be multiples of 4; instance norm sees the whole input
        return nets.UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                         num_res_units=1).eval()

    coarse, fine = unet(), unet()
    x = torch.randn(3, 64, 64)
    # context covering the image: every window sees the whole input, so instance norm matches too
    full = two_stage_inference(x, coarse, fine, size_multiple=4, patches=10 ** 6, patch_size=32, context=64)
    np.testing.assert_allclose(full.probs, whole(fine, x, softmax=True), atol=1e-5)
    assert full.macs["baseline"] > 0 and full.macs["stage1"] > 0
    meta = pytest.importorskip("monai.data").MetaTensor(x[:, :60, :50])  # MONAI's tensor type, read as a tensor
    some = two_stage_inference(meta, coarse, fine, size_multiple=4, patches=3, score="uncertainty")
    assert some.probs.shape == (2, 60, 50) and len(some.windows) == 3
    assert 0 < some.macs["ratio"] < 1


def test_a_bundles_networks_reproduce_its_own_two_stage_run():
    from synthetic import blob_image, small_bundle
    bundle, image = small_bundle(), blob_image(96, 128)
    options = {"patches": 5, "context": 4, "rounds": 2}
    own = two_stage_inference(image, bundle.s1, bundle.s2, scale=bundle.s1_scale, mean=bundle.mean, std=bundle.std,
                              size_multiple=bundle.s2.config.size_multiple, **options)
    builtin = iterseg.two_stage(image, bundle, precision="fp32", **options)
    np.testing.assert_array_equal(own.windows, builtin.windows)
    np.testing.assert_allclose(own.probs, builtin.probs, atol=1e-5)  # the runner folds batch norm
    assert {k: own.macs[k] for k in ("stage1", "stage2", "baseline")} == {
        k: builtin.macs[k] for k in ("stage1", "stage2", "baseline")}


@pytest.mark.slow  # OpenVINO's converter traces each module: seconds on 2 cores
def test_openvino_runs_the_users_modules_with_the_same_result(x):
    coarse, fine = conv_net(seed=1), conv_net(seed=2)
    options = {"patches": 5, "patch_size": 16, "context": 2}
    as_given = two_stage_inference(x, coarse, fine, **options)
    converted = two_stage_inference(x, coarse, fine, backend="openvino", **options)
    assert as_given.options["backend"] == "as given"
    assert (converted.options["backend"], converted.options["precision"]) == ("openvino", "fp32")
    np.testing.assert_array_equal(converted.windows, as_given.windows)
    np.testing.assert_allclose(converted.probs, as_given.probs, atol=1e-5)
    assert converted.macs == as_given.macs  # fvcore still counts the modules
    with pytest.raises(InputError, match="backend 'openvino' needs the coarse network as a torch module"):
        two_stage_inference(x, lambda t: t[:, :1], fine, backend="openvino", **options)
