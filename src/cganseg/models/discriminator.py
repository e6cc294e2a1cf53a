"""PatchGAN discriminators with a residual linear-attention block: cGAN-Seg's D1 and D2.

The cGAN-Seg paper (Zargari et al., iScience 2024, Fig. 1A) judges synthetic images (D1) and
predicted masks (D2) with a PatchGAN (Isola et al., pix2pix, CVPR 2017; Zhu et al., CycleGAN,
ICCV 2017) to which a residual linear-attention layer is added. This module builds both; they
differ only in ``in_channels`` (image channels C for D1, mask classes K for D2).

Layout for ``n_layers = L`` and base ``width``:

- 4x4 stride-2 convolution to ``width`` channels, LeakyReLU(0.2) (no norm on raw input, as in
  pix2pix);
- ``L - 1`` more 4x4 stride-2 convolutions, each doubling the channels (capped at ``8 * width``),
  InstanceNorm, LeakyReLU(0.2);
- :class:`LinearAttention` on the coarsest map, after the last downsampling stage, where each
  position already summarises a large patch and the attention is cheapest;
- one 4x4 stride-1 convolution (channels doubled once more, same cap), InstanceNorm, LeakyReLU;
- a 4x4 stride-1 convolution to one channel: raw per-patch logits. No sigmoid, because the
  cGAN-Seg losses compare these outputs with 0/1 by MSE (least-squares GAN).

All convolutions use padding 1, so a side of ``s`` pixels gives ``floor(s / 2**L) - 2`` output
patches; the smallest usable side is ``3 * 2**L`` (12, 24, 48 for L = 2, 3, 4), and smaller
inputs raise :class:`~cganseg.errors.InputError`. The network is fully convolutional, so any
larger size, odd ones included, works.

Normalisation: InstanceNorm, as in the CycleGAN PatchGAN that cGAN-Seg extends. It behaves the
same at the paper's batch size of one as at larger batches (BatchNorm would not), and the
least-squares objective already keeps the discriminator's gradients well scaled, which is what
spectral normalisation would otherwise be for. The norm is affine (learned per-channel scale and
shift) and the convolution before it has no bias, which the norm's mean subtraction would cancel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cganseg.errors import InputError

DISCRIMINATORS = ("patchgan",)


class LinearAttention(nn.Module):
    """Residual efficient attention (Shen et al., WACV 2021) whose cost is linear in H*W.

    Keys are softmax-normalised over positions and queries over their channels; the global
    context ``K V^T`` (key channels x value channels per head) is formed first and then read out by
    every query, so no (H*W) x (H*W) attention map is ever built. The result goes through a 1x1
    convolution and is added as ``x + gamma * out`` with the scalar ``gamma`` starting at 0, so a
    freshly built block is the identity and attention is blended in only as training finds it
    useful (as in SAGAN).
    """

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None) -> None:
        super().__init__()
        key_channels = max(channels // 8, heads) if key_channels is None else key_channels
        if channels < 1 or heads < 1 or key_channels < 1:
            raise ValueError("channels, heads and key_channels must be positive")
        if channels % heads or key_channels % heads:
            raise ValueError(
                f"channels ({channels}) and key_channels ({key_channels}) must be divisible "
                f"by heads ({heads})"
            )
        self.heads = heads
        self.query = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.key = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.out = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = h * w
        queries = self.query(x).reshape(b, self.heads, -1, n).softmax(dim=2)
        keys = self.key(x).reshape(b, self.heads, -1, n).softmax(dim=3)
        values = self.value(x).reshape(b, self.heads, -1, n)
        context = keys @ values.transpose(2, 3)  # (b, heads, key_ch, value_ch): size free of n
        attended = context.transpose(2, 3) @ queries  # (b, heads, value_ch, n)
        return x + self.gamma * self.out(attended.reshape(b, c, h, w))


def _down_block(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    """4x4 conv (no bias), InstanceNorm, LeakyReLU(0.2): one PatchGAN stage."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    ]


class PatchDiscriminator(nn.Module):
    """PatchGAN with residual linear attention; (B, C, H, W) -> logits (B, 1, h, w).

    ``config`` rebuilds the same architecture via :func:`build_discriminator`, so it can be stored
    next to the weights in a checkpoint.
    """

    def __init__(
        self, in_channels: int, width: int = 64, n_layers: int = 3, attention: bool = True
    ) -> None:
        super().__init__()
        for option, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("n_layers", n_layers),
        ):
            if value < 1:
                raise InputError(f"discriminator {option} must be at least 1, got {value}")
        self.config = {
            "name": "patchgan",
            "in_channels": in_channels,
            "width": width,
            "n_layers": n_layers,
            "attention": attention,
        }
        self.n_layers = n_layers
        self.min_input_size = 3 * 2**n_layers

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = width
        for i in range(1, n_layers):
            next_channels = width * min(2**i, 8)
            layers += _down_block(channels, next_channels, stride=2)
            channels = next_channels
        if attention:
            layers.append(LinearAttention(channels))
        next_channels = width * min(2**n_layers, 8)
        layers += _down_block(channels, next_channels, stride=1)
        layers.append(nn.Conv2d(next_channels, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch-grid size for an input of ``height`` x ``width`` (loss targets need it)."""
        if min(height, width) < self.min_input_size:
            raise InputError(
                f"discriminator input {height}x{width} is too small: with n_layers="
                f"{self.n_layers} both sides must be at least {self.min_input_size} pixels"
            )
        return height // 2**self.n_layers - 2, width // 2**self.n_layers - 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.output_size(x.shape[-2], x.shape[-1])
        return self.model(x)


def build_discriminator(config: Mapping[str, Any]) -> PatchDiscriminator:
    """Build a discriminator from a ``config`` dict such as ``PatchDiscriminator.config``."""
    options = dict(config)
    name = options.pop("name", "patchgan")
    if name not in DISCRIMINATORS:
        raise InputError(
            f"unknown discriminator {name!r}; choose one of {', '.join(DISCRIMINATORS)}"
        )
    allowed = {"in_channels", "width", "n_layers", "attention"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown discriminator option(s): {', '.join(unknown)}")
    if "in_channels" not in options:
        raise InputError("discriminator config needs 'in_channels'")
    return PatchDiscriminator(**options)
