"""training/defaults.py: a bundle's context and window count from its own validation curve."""
import dataclasses

import numpy as np
import pytest

import iterseg
from iterseg.api import Segmenter
from iterseg.errors import InputError
from iterseg.model.store import read_bundle, save_bundle
from iterseg.training import defaults
from iterseg.training.assemble import write_defaults
from iterseg.training.data import load_spec

from synthetic import disc_pair, small_bundle, write_dataset


def test_the_cheapest_count_that_keeps_99_percent_at_a_quarter_of_the_cost():
    curve = [(0, 0.70, 0.05), (4, 0.793, 0.10), (16, 0.795, 0.20), (64, 0.80, 0.50)]
    assert defaults.choose_patches(0.8, curve)["patches"] == 4
    assert defaults.choose_patches(0.8, [(0, 0.793, 0.05)] + curve[1:])["patches"] == 0  # stage 1 is enough
    assert defaults.choose_patches(0.8, [(0, 0.7, 0.05), (64, 0.8, 0.5)])["patches"] == 0  # 64 costs 50 %


def test_without_99_percent_the_best_dice_at_a_quarter_of_the_cost():
    chosen = defaults.choose_patches(0.8, [(0, 0.70, 0.05), (4, 0.72, 0.1), (16, 0.74, 0.2), (64, 0.78, 0.5)])
    assert chosen["patches"] == 16 and "no N_p keeps" in chosen["rule"]


def test_falls_are_measured_from_the_best_point_so_far():
    assert defaults.falls([(0, 0.70, 0), (4, 0.72, 0), (16, 0.719, 0), (64, 0.73, 0)]) == []
    assert defaults.falls([(0, 0.70, 0), (4, 0.72, 0), (16, 0.719, 0), (64, 0.717, 0)]) == [(4, 64, 0.003)]


def fake_curves(by_context):
    """validation_curve stand-in: the curve of each context from ``by_context``, and the contexts asked."""
    asked = []

    def curve(segmenter, samples, counts, context):
        asked.append(context)
        return by_context[context]
    return curve, asked


RISING = [(0, 0.70, 0.05), (4, 0.75, 0.1), (2 ** 20, 0.8, 1.05)]
FALLING = [(0, 0.70, 0.05), (4, 0.75, 0.1), (16, 0.74, 0.2), (2 ** 20, 0.8, 1.05)]


@pytest.mark.parametrize("curves, context", [
    ({0: RISING}, 0),
    ({0: FALLING, 4: FALLING, 8: RISING}, 8),
    ({0: FALLING, 4: [(0, 0.70, 0.05), (4, 0.75, 0.1), (16, 0.745, 0.2)], 8: FALLING, 16: FALLING}, 4),
])
def test_the_context_is_the_smallest_whose_curve_never_falls(monkeypatch, curves, context):
    segmenter = Segmenter(small_bundle())  # size multiple 4
    curve, asked = fake_curves(curves)
    monkeypatch.setattr(defaults, "validation_curve", curve)
    monkeypatch.setattr(defaults, "baseline_dice", lambda segmenter, samples: 0.8)
    chosen = defaults.derive_defaults(segmenter, [])
    assert chosen["context"] == context and asked == list(curves)
    assert chosen["patches"] in (0, 4) and set(chosen["curves"]) == {str(c) for c in curves}


def test_measured_defaults_are_written_into_the_bundle_and_used(tmp_path):
    spec = load_spec(write_dataset(tmp_path, count=6, height=64, width=80), tmp_path)
    ids = [sample.id for sample in spec.split("train")][:2]
    bundle = dataclasses.replace(small_bundle(), provenance={"stages": {"s2": {"val_ids": ids}}}, window=16)
    chosen = write_defaults(bundle, spec, tmp_path / "b.pt")
    written = read_bundle(tmp_path / "b.pt")
    assert (written.context, written.patches) == (chosen["context"], chosen["patches"])
    assert written.provenance["default"]["measured"] == "on 2 validation image(s) of syn"
    for points in chosen["curves"].values():  # every window refined is stage 2 over the whole image
        assert points[-1][0] == defaults.ALL_WINDOWS and points[-1][1] == chosen["baseline_dice"]
    result = iterseg.load(tmp_path / "b.pt").predict(disc_pair(64, 80, seed=1)[0])
    assert result.options["context"] == written.context and len(result.windows) == written.patches
    with pytest.raises(InputError, match="no validation images"):
        write_defaults(small_bundle(), spec, tmp_path / "c.pt")


def test_a_context_told_wins_over_the_bundle_s(tmp_path):
    bundle = dataclasses.replace(small_bundle(), context=8)
    image = disc_pair(64, 80, seed=1)[0]
    assert Segmenter(bundle).predict(image, patches=2, patch_size=16).options["context"] == 8
    assert Segmenter(bundle).predict(image, patches=2, patch_size=16, context=0).options["context"] == 0
    save_bundle(bundle, tmp_path / "b.pt")
    assert read_bundle(tmp_path / "b.pt").context == 8
    with pytest.raises(Exception, match="context must be pixels"):
        dataclasses.replace(small_bundle(), context=-1)
    assert np.isfinite(Segmenter(bundle).macs(64, 80)["ratio"])
