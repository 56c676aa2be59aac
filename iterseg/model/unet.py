"""The U-Net of both stages: its architecture (``UNetConfig``) and the network (``UNet``).

Glossary
    x        float32 (N, C, h, w) normalised image batch, h and w multiples of ``size_multiple``
    logits   float32 (N, K, h, w) raw network output; never leaves ``model``/``infer``
"""
from dataclasses import dataclass

import torch
from torch import nn

NORMS = ("batch", "none")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net: ``depth`` poolings, ``width`` channels at full scale, doubled per level."""
    in_channels: int = 3
    out_channels: int = 1
    depth: int = 4
    width: int = 16
    norm: str = "batch"

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "depth", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "depth" else 1):
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}.")
        if self.norm not in NORMS:
            raise ValueError(f"UNetConfig.norm must be one of {NORMS}, got {self.norm!r}.")

    @property
    def size_multiple(self):
        """Input height and width must be multiples of this (2 ** depth)."""
        return 2 ** self.depth

    @property
    def receptive_radius(self):
        """How far (pixels) an output pixel can see: 3x3 convs add 2**level, each 2x2 pool 2**level."""
        encoder = sum(5 * 2 ** level for level in range(self.depth))
        return encoder + 2 * 2 ** self.depth


def _double_conv(cin, cout, norm):
    layers = []
    for c in (cin, cout):
        layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with transposed-convolution upsampling. Returns logits."""

    def __init__(self, config=None, **kwargs):
        super().__init__()
        self.config = config or UNetConfig(**kwargs)
        cfg = self.config
        widths = [cfg.width * 2 ** level for level in range(cfg.depth + 1)]
        self.inc = _double_conv(cfg.in_channels, widths[0], cfg.norm)
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1], cfg.norm))
            for i in range(cfg.depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(cfg.depth)))
        self.fuse = nn.ModuleList(
            _double_conv(2 * widths[i], widths[i], cfg.norm) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], cfg.out_channels, 1)

    def forward(self, x):
        """x: (N, in_channels, h, w), h and w multiples of 2 ** depth -> logits (N, out_channels, h, w)."""
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up, fuse in zip(self.up, self.fuse, strict=True):
            y = fuse(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)
