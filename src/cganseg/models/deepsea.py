"""DeepSea segmenter, one of the three segmentation backbones of cGAN-Seg.

DeepSea (Zargari et al., "DeepSea is an efficient deep-learning model for single-cell
segmentation and tracking in time-lapse microscopy", Cell Reports Methods 2023) is a scaled-down
UNet built from residual blocks: fewer levels and far fewer parameters than the 2D UNet, which is
what makes it train well from a few hundred annotated images.

Layout followed: the DeepSea variant that the cGAN-Seg reference code (GitHub abzargar/cGAN-Seg)
trains for the iScience 2024 paper, which is the network the paper's DeepSea results come from:

- residual block: 3x3 conv, BatchNorm, ReLU, Dropout(0.2), 3x3 conv; a 1x1 conv projects the
  input as the shortcut; after the sum, BatchNorm and ReLU;
- encoder: four residual blocks with channels ``width * (1, 2, 4, 8)`` (64-128-256-512 at
  DeepSea's width 64) and a 2x2 max-pool between them;
- decoder: bilinear x2 upsampling, concatenation with the encoder map of the same level, and a
  residual block back to that level's channels;
- a 1x1 convolution gives ``n_classes`` logits.

Deviations and why: DeepSea's own segmentation model (GitHub abzargar/DeepSea) has one level
fewer and a second 1x1 head for "touching cells" edges; cGAN-Seg uses only the cell/background
output, so that head is left out. Convolutions that feed BatchNorm (directly or through the
residual sum) carry no bias, since BatchNorm's shift makes it redundant. Three poolings would only
need H, W divisible by 8; ``size_multiple`` is 16 so that all backbones share one padding rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cganseg.models.base import SegmenterBase


class ResBlock(nn.Module):
    """DeepSea's residual block; dropout inside the branch regularises the small-data training."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.post = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.branch(x) + self.shortcut(x))


class DeepSea(SegmenterBase):
    """DeepSea segmentation network; ``forward`` maps (B, C_in, H, W) to (B, n_classes, H, W)."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 64) -> None:
        super().__init__("deepsea", in_channels, n_classes, width)
        channels = [width * m for m in (1, 2, 4, 8)]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for c in channels:
            self.encoder.append(ResBlock(previous, c))
            previous = c
        self.pool = nn.MaxPool2d(2)
        # Each decoder block sees the upsampled deeper map concatenated with the skip map.
        self.decoder = nn.ModuleList(
            ResBlock(channels[i] + channels[i + 1], channels[i])
            for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = block(torch.cat([skips.pop(), up], dim=1))
        return self.head(x)
