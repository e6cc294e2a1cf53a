"""Cellpose-style segmenter (CPnet without flows), one of the three backbones of cGAN-Seg.

Cellpose (Stringer et al., "Cellpose: a generalist algorithm for cellular segmentation", Nature
Methods 2021) uses a residual UNet, CPnet, with two ideas we keep because they are what makes the
network "Cellpose-style":

- pre-activation residual blocks (BatchNorm, ReLU, conv), two residual units per level, a
  BatchNorm + 1x1 conv projection as the first shortcut; channels ``nbase = width * (1, 2, 4, 8)``
  (32-64-128-256 at Cellpose's width 32) with a 2x2 max-pool between levels;
- a global "style" vector: the deepest feature map averaged over space and L2-normalised; in
  every residual up block a linear layer maps it to a per-channel offset added before three of
  the four convolutions, so that image-wide appearance (cell size, contrast, modality) steers the
  whole decoder;
- skip connections are *added* to the upsampled features (not concatenated), after nearest x2
  upsampling; the first up block runs at the deepest level with that level's own map as the skip.

Deviation and why: Cellpose predicts two flow fields and a cell probability and needs a
flow-following step to get instances; cGAN-Seg (Zargari et al., iScience 2024) uses the network
without flows, so the output layer (BatchNorm, ReLU, 1x1 conv as in Cellpose) gives
``n_classes`` logits. The cGAN-Seg reference code runs this network with nbase 64-128-256; we keep
Cellpose's own four levels and width 32. Three poolings would only need H, W divisible by 8;
``size_multiple`` is 16 so that all backbones share one padding rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cganseg.models.base import SegmenterBase


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Cellpose's pre-activation unit: BatchNorm, ReLU, then a 'same' convolution."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
    )


def bn_projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """Shortcut that changes the channel count: BatchNorm then 1x1 conv, no ReLU (as Cellpose)."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, 1))


class ResDown(nn.Module):
    """Two pre-activation residual units; the first one's shortcut is a projection."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = bn_projection(in_channels, out_channels)
        self.unit1 = nn.Sequential(
            bn_relu_conv(in_channels, out_channels), bn_relu_conv(out_channels, out_channels)
        )
        self.unit2 = nn.Sequential(
            bn_relu_conv(out_channels, out_channels), bn_relu_conv(out_channels, out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.unit1(x)
        return x + self.unit2(x)


class StyleConv(nn.Module):
    """Adds a per-channel offset computed from the style vector, then BN-ReLU-conv."""

    def __init__(self, channels: int, style_channels: int) -> None:
        super().__init__()
        self.style = nn.Linear(style_channels, channels)
        self.conv = bn_relu_conv(channels, channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.conv(x + self.style(style)[:, :, None, None])


class ResUp(nn.Module):
    """Cellpose's residual up block: skip added after the first conv, style in the other three."""

    def __init__(self, in_channels: int, out_channels: int, style_channels: int) -> None:
        super().__init__()
        self.proj = bn_projection(in_channels, out_channels)
        self.conv0 = bn_relu_conv(in_channels, out_channels)
        self.conv1 = StyleConv(out_channels, style_channels)
        self.conv2 = StyleConv(out_channels, style_channels)
        self.conv3 = StyleConv(out_channels, style_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.conv1(self.conv0(x) + skip, style)
        return x + self.conv3(self.conv2(x, style), style)


class CPnet(SegmenterBase):
    """Cellpose's CPnet with a class-logit head; maps (B, C_in, H, W) to (B, n_classes, H, W)."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32) -> None:
        super().__init__("cellpose", in_channels, n_classes, width)
        nbase = [width * m for m in (1, 2, 4, 8)]
        self.down = nn.ModuleList()
        previous = in_channels
        for c in nbase:
            self.down.append(ResDown(previous, c))
            previous = c
        self.pool = nn.MaxPool2d(2)
        style_channels = nbase[-1]
        # Deepest block first: it keeps the deepest width and uses that level's map as its skip.
        self.up = nn.ModuleList([ResUp(nbase[-1], nbase[-1], style_channels)])
        self.up.extend(
            ResUp(nbase[i + 1], nbase[i], style_channels) for i in reversed(range(len(nbase) - 1))
        )
        self.head = bn_relu_conv(nbase[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        style = F.normalize(skips[-1].mean(dim=(2, 3)), dim=1)
        x = self.up[0](skips[-1], skips[-1], style)
        for block, skip in zip(self.up[1:], reversed(skips[:-1]), strict=True):
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), skip, style)
        return self.head(x)
