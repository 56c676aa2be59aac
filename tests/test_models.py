"""The U-Net and the bundle file: shapes, receptive field, round trip, refusal of bad files."""
import pickle

import numpy as np
import pytest
import torch

import iterseg
from iterseg.errors import ModelError
from iterseg.model.store import read_bundle, save_bundle
from iterseg.model.unet import UNet, UNetConfig

from synthetic import small_bundle


@pytest.mark.parametrize("config", [UNetConfig(), UNetConfig(in_channels=1, out_channels=4, depth=3, width=8, norm="none")])
def test_unet_returns_logits_of_the_input_size(config):
    model = UNet(config).eval()
    x = torch.randn(2, config.in_channels, 2 * config.size_multiple, 3 * config.size_multiple)
    with torch.inference_mode():
        assert model(x).shape == (2, config.out_channels, x.shape[2], x.shape[3])


def test_receptive_radius_bounds_the_influence_of_a_pixel():
    config = UNetConfig(depth=2, width=4, norm="none")
    torch.manual_seed(0)
    model = UNet(config)
    x = torch.randn(1, 3, 96, 96, requires_grad=True)
    model(x)[0, 0, 48, 48].backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(1)[0], as_tuple=True)
    reach = max((rows - 48).abs().max().item(), (cols - 48).abs().max().item())
    assert 0 < reach <= config.receptive_radius


@pytest.mark.parametrize("field, value", [("depth", -1), ("width", 0), ("norm", "group"), ("in_channels", 2.0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        UNetConfig(**{field: value})


def test_bundle_round_trip(tmp_path):
    bundle = small_bundle()
    bundle.provenance = {"trained_on": "nothing", "epochs": 0}
    path = tmp_path / "b.pt"
    save_bundle(bundle, path, half=True)
    loaded = read_bundle(path)
    assert loaded.meta() == bundle.meta()
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.s2(x).numpy(), bundle.s2(x).numpy(), atol=2e-2)
    assert not list(tmp_path.glob(".*partial*"))


def test_embedded_untrained_bundle_is_small_and_labelled(tmp_path):
    seg = iterseg.load("untrained")
    assert seg.bundle.untrained and "untrained" in iterseg.available_models()
    save_bundle(seg.bundle, tmp_path / "u.pt")
    assert (tmp_path / "u.pt").stat().st_size <= 10 * 2 ** 20


def test_unknown_name_lists_valid_names():
    with pytest.raises(ModelError, match="valid names: .*untrained"):
        iterseg.load("no-such-model")


def test_missing_truncated_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        iterseg.load(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_bundle(small_bundle(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ModelError, match="not a readable iterseg model bundle"):
        read_bundle(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ModelError, match="not an iterseg model bundle"):
        read_bundle(foreign)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "b.pt"
    save_bundle(small_bundle(), path)
    payload = torch.load(path, weights_only=True)
    payload["meta"] = payload["meta"].replace('"width": 4', '"width": 8')
    torch.save(payload, path)
    with pytest.raises(ModelError, match="do not fit the architecture"):
        read_bundle(path)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch EXPLOITED",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "iterseg-bundle", "payload": _Exploit()}, f)
    with pytest.raises(ModelError, match="refused to load .*pickled Python objects.*nothing was run"):
        iterseg.load(path)
    assert not (tmp_path / "EXPLOITED").exists()
