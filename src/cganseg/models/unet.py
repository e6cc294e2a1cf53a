"""2D UNet segmenter, one of the three segmentation backbones of cGAN-Seg.

The network follows Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
Segmentation" (MICCAI 2015), in the form the cGAN-Seg paper (Zargari et al., iScience 2024,
Fig. S2) uses as its "2D-UNet" segmenter:

- encoder: four levels of two 3x3 convolutions, each followed by BatchNorm and ReLU, with a
  2x2 max-pool between levels; a fifth (bottleneck) level of the same block;
- channels ``width * (1, 2, 4, 8, 16)`` (64-128-256-512-1024 at the paper's width 64);
- decoder: a 2x2 stride-2 transposed convolution halves the channels and doubles the size, the
  encoder feature map of the same level is concatenated, then the same double-conv block;
- a 1x1 convolution gives ``n_classes`` logits.

Choices and why: "same" padding (not Ronneberger's valid convolutions) so that the output has the
input's size and no crop of the skip maps is needed; BatchNorm (absent from the 2015 paper but used
by cGAN-Seg) because it lets the network train with the paper's small batches and high learning
rates; the convolutions before BatchNorm carry no bias, since BatchNorm's shift makes it redundant.
Four poolings mean H and W must be multiples of 16.
"""

from __future__ import annotations

import torch
from torch import nn

from cganseg.models.base import SegmenterBase


class DoubleConv(nn.Sequential):
    """Two (3x3 conv, BatchNorm, ReLU) layers: the UNet's unit of work at each level."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Transposed-conv upsampling, skip concatenation, then a double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmenterBase):
    """Ronneberger UNet with BatchNorm; ``forward`` maps (B, C_in, H, W) to (B, n_classes, H, W)."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 64) -> None:
        super().__init__("unet", in_channels, n_classes, width)
        channels = [width * m for m in (1, 2, 4, 8, 16)]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for c in channels:
            self.encoder.append(DoubleConv(previous, c))
            previous = c
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i]) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)
