"""The U-Net: logits of the input size, a receptive field within the stated radius, checked configs."""
import pytest
import torch

from iterseg.model.unet import UNet, UNetConfig


@pytest.mark.parametrize("config", [UNetConfig(),
                                    UNetConfig(in_channels=1, out_channels=4, depth=3, width=8, norm="none")])
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


def test_size_multiple_and_receptive_radius():
    assert UNetConfig(depth=4).size_multiple == 16 and UNetConfig(depth=2).size_multiple == 4
    assert UNetConfig(depth=2).receptive_radius == 5 + 10 + 8 and UNetConfig(depth=0).receptive_radius == 2


def test_keyword_construction():
    model = UNet(depth=1, width=2, out_channels=3)
    assert model.config == UNetConfig(depth=1, width=2, out_channels=3)
    with torch.inference_mode():
        assert model.eval()(torch.zeros(1, 3, 4, 6)).shape == (1, 3, 4, 6)
