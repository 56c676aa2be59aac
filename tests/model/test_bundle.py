"""The bundle: its checks (one ModelError each, naming the bundle), what it derives (conditioned S2,
baseline kind, S2 normalisation, palette) and the runners it prepares once per precision."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

import iterseg
from iterseg.errors import ModelError
from iterseg.model.bundle import Bundle, default_palette
from iterseg.model.unet import UNet

from synthetic import SMALL, blob_image, conditioned_bundle, multiclass_bundle, small_bundle


def with_changes(bundle, **changes):
    fields = dict(s1=bundle.s1, s2=bundle.s2, mean=bundle.mean, std=bundle.std, name="odd")
    return Bundle(**{**fields, **changes})


@pytest.mark.parametrize("changes, words", [
    ({"s2": UNet(SMALL.__class__(**{**SMALL.__dict__, "in_channels": 5}))}, "a conditioned S2"),
    ({"reference": UNet(SMALL.__class__(**{**SMALL.__dict__, "in_channels": 4}))}, "reference network must take"),
    ({"mean": (0.5, 0.5)}, "mean and std need 3 values each"),
    ({"s1_scale": 0}, "s1_scale must be in (0, 1]"),
    ({"s1_scale": 1.5}, "s1_scale must be in (0, 1]"),
    ({"class_names": ("a", "b", "c")}, "class names do not match"),
    ({"palette": ((0, 0, 0),)}, "one RGB triple (0-255) per class"),
    ({"palette": ((0, 0, 0), (0, 0, 256))}, "one RGB triple (0-255) per class"),
])
def test_inconsistent_bundles_are_refused(changes, words):
    with pytest.raises(ModelError) as error:
        with_changes(small_bundle(), **changes)
    assert str(error.value).startswith("bundle 'odd': ") and words in str(error.value)


def test_a_plain_bundle():
    bundle = small_bundle()
    assert bundle.in_channels == 3 and bundle.num_classes == 2 and not bundle.conditioned
    assert bundle.baseline_kind == "s2" and bundle.unconditioned() is bundle
    assert bundle.s2_mean == bundle.mean and bundle.s2_std == bundle.std
    assert list(bundle.networks()) == ["s1", "s2"] and bundle.palette == ((0, 0, 0), (255, 255, 255))
    assert not bundle.s1.training and not bundle.s2.training  # networks are put in eval mode
    json.dumps(bundle.meta())  # JSON-ready


def test_a_conditioned_bundle_and_its_unconditioned_self():
    bundle, plain = conditioned_bundle()
    assert bundle.conditioned and bundle.baseline_kind == "reference"
    assert bundle.s2_mean == plain.mean + (0.5,) and bundle.s2_std == plain.std + (0.5,)
    assert list(bundle.networks()) == ["s1", "s2", "reference"]
    before = bundle.unconditioned()
    assert before.s2 is plain.s2 and before.reference is None and not before.conditioned
    lean, _ = conditioned_bundle(with_reference=False)
    assert lean.baseline_kind == "s1+s2" and lean.unconditioned() is lean
    assert bundle.meta()["conditioned"] and bundle.meta()["baseline"] == "reference"


def test_one_method_chooses_each_networks_normalisation():
    bundle, plain = conditioned_bundle()
    image = (plain.mean, plain.std)
    assert bundle.normalisation(bundle.s1.config) == bundle.normalisation(bundle.reference.config) == image
    assert bundle.normalisation(bundle.s2.config) == (plain.mean + (0.5,), plain.std + (0.5,))
    assert plain.normalisation(plain.s2.config) == image


def test_stage2_the_baseline_and_calibration_ask_the_bundle_for_their_normalisation(monkeypatch):
    """Bundle.normalisation is the only chooser: a conditioned S2 with other values changes every
    full-resolution input (stage 2, the 's1+s2' baseline, int8 calibration)."""
    import numpy as np

    import iterseg
    from iterseg.model.bundle import Bundle
    from iterseg.training.calibrate import calibration_batches, stage1_runs

    from synthetic import blob_image

    lean, _ = conditioned_bundle(with_reference=False)
    image = blob_image(64, 64)
    segmenter = iterseg.Segmenter(lean, precision="fp32", backend="torch")
    windows = np.array([[0, 0, 32, 32]])
    runs = stage1_runs(lean, [image.astype(np.float32) / 255])

    def outputs():
        return (segmenter.predict(image, windows=windows).probs, segmenter.predict_baseline(image).probs,
                calibration_batches(runs, lean, lean.s2)[0].numpy())

    before = outputs()
    chosen = Bundle.normalisation
    monkeypatch.setattr(Bundle, "normalisation", lambda self, config: tuple(
        values[:-1] + (values[-1] * 3,) if config.in_channels > self.in_channels else values
        for values in chosen(self, config)))
    for old, new in zip(before, outputs(), strict=True):
        assert not np.allclose(old, new)


def test_default_palette():
    assert default_palette(2) == ((0, 0, 0), (255, 255, 255))
    assert default_palette(4) == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))  # PASCAL VOC
    assert len(set(default_palette(21))) == 21
    assert multiclass_bundle().num_classes == 4


def test_runners_are_made_once_per_precision_even_from_threads():
    bundle = small_bundle()
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: bundle.runners("fp32"), range(8)))
    assert all(m[0] is made[0][0] and m[1] is made[0][1] for m in made)
    assert bundle.runners("bf16")[1] is not made[0][1] and bundle.runners("bf16")[1].precision == "bf16"
    assert bundle.baseline_runner("fp32") is made[0][1]  # S2, the network of an unconditioned baseline
    reference_bundle, _ = conditioned_bundle()
    assert reference_bundle.baseline_runner().config == reference_bundle.reference.config


def test_int8_without_calibration_says_how_to_make_it():
    with pytest.raises(ModelError, match="no int8 calibration; make an int8 bundle with `iterseg quantize"):
        small_bundle().runners("int8")
    with pytest.raises(iterseg.ModelError, match="iterseg quantize"):
        iterseg.two_stage(blob_image(32, 32), small_bundle(), precision="int8")
