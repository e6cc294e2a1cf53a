"""StyleUNet: the cGAN-Seg generator Gen (mask -> image), paper Fig. 1A and Fig. S1.

Gen is a 2D UNet whose *decoder* carries a style path inspired by StyleGAN2, so that one mask
(a class map, (B, K, H, W) in [0, 1]) together with a random latent yields one of many plausible
cell images (B, C, H, W) in [-1, 1]: the encoder fixes *where* the cells are, the style path
chooses *how they look* (texture, brightness, focus, subcellular detail).

What follows StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020):

- a mapping network z -> w: pixel norm of z, then ``n_mapping`` equalised-learning-rate linear
  layers with LeakyReLU(0.2), the mapping layers' learning rate scaled by 0.01;
- every decoder 3x3 convolution is modulated by a per-layer affine projection of w (bias
  initialised to 1) and demodulated by the L2 norm of the modulated weights, computed for all
  samples at once as one grouped convolution over the batch;
- per-layer noise inputs: one noise map per sample at the layer's resolution, scaled by a learned
  per-channel strength initialised to 0 (so noise only matters once training asks for it);
- style mixing: with probability ``mix_prob`` a second latent drives the decoder layers after a
  random crossover index, which keeps neighbouring layers' styles from becoming entangled. The
  decision and the crossover are drawn per sample and applied with tensor ops, so a training step
  never waits for the GPU to tell the host which branch to take.

What is simplified, and why:

- no constant input, no progressive growing and no skip/residual "toRGB" tower: the UNet's
  bottleneck and skip maps give the decoder its spatial content, which is what makes Gen
  mask-conditional; a single 1x1 conv + tanh gives the image;
- upsampling is bilinear followed by a modulated conv, not a transposed modulated conv with a
  blur filter: simpler, and it does not produce checkerboard artefacts either;
- no path-length regulariser, no truncation trick and no running average of w: cGAN-Seg trains
  Gen with reconstruction, identity and LSGAN losses (paper Eq. 6-17), not the StyleGAN2 loss;
- equalised learning rate only in the mapping network, the modulation affines and the modulated
  convolutions, where the StyleGAN2 weight arithmetic (demodulation, lr multipliers) relies on
  unit-variance weights. The encoder and the output conv are plain ``nn.Conv2d`` layers.

The encoder is norm-free: (3x3 conv, LeakyReLU(0.2)) pairs with He initialisation, average
pooling between levels. BatchNorm would couple the samples of the small GAN batches and make
train and eval outputs differ; instance norm would erase per-image statistics the style path is
meant to control. The input is a bounded one-hot map, so He initialisation alone keeps the
activation scale in check.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cganseg import checks
from cganseg.errors import InputError

GENERATORS = ("styleunet",)

# StyleGAN2's learning-rate multiplier for the mapping network: a slowly changing w space.
MAPPING_LR_MUL = 0.01
# Gain after LeakyReLU(0.2) that keeps the second moment of unit-variance activations near 1.
LRELU_GAIN = math.sqrt(2.0)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: N(0, 1) weights scaled at run time.

    Scaling at run time (by ``lr_mul / sqrt(fan_in)``) rather than at initialisation makes Adam's
    per-parameter steps the same relative size for every layer; ``lr_mul`` slows a layer down.
    """

    def __init__(
        self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``n_layers`` equalised linear layers with LeakyReLU."""

    def __init__(self, style_dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EqualLinear(style_dim, style_dim, lr_mul=MAPPING_LR_MUL) for _ in range(n_layers)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            w = _lrelu(layer(w))
        return w


class ModulatedConv2d(nn.Module):
    """StyleGAN2 3x3 convolution: weights modulated per sample by a style, then demodulated.

    ``forward(x, w)`` projects w to one scale per input channel (affine, bias 1), multiplies the
    shared weights by it, and divides each output filter by its L2 norm. For inputs of unit
    variance the outputs then have unit variance whatever the style, which is what replaces
    AdaIN's explicit normalisation. All samples run as one grouped convolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, style_dim: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.affine = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        style = self.affine(w)  # (B, in)
        weight = self.scale * self.weight.unsqueeze(0) * style[:, None, :, None, None]
        demod = torch.rsqrt(weight.square().sum(dim=(2, 3, 4)) + 1e-8)  # (B, out)
        weight = weight * demod[:, :, None, None, None]
        weight = weight.reshape(
            batch * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size
        )
        x = _edge_pad(x.reshape(1, batch * self.in_channels, height, width), self.kernel_size // 2)
        out = F.conv2d(x, weight, groups=batch)
        return out.reshape(batch, self.out_channels, height, width)


def _edge_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad by reflection (by repeating the edge where a map is too small to reflect): zero
    padding drew a frame a few pixels inside every generated image (issue 15)."""
    return F.pad(x, [pad] * 4, "reflect" if min(x.shape[-2:]) > pad else "replicate")


class _EdgePaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) that pads with :func:`_edge_pad`."""

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        x = _edge_pad(x, self.kernel_size[0] // 2)
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class StyledConv(nn.Module):
    """Modulated conv, scaled noise input, bias, LeakyReLU: one decoder layer."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, style_dim)
        self.noise_strength = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return _lrelu(self.conv(x, w) + self.noise_strength * noise + self.bias)


def _encoder_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 conv with He initialisation for LeakyReLU(0.2), so the norm-free encoder keeps scale."""
    conv = _EdgePaddedConv2d(in_channels, out_channels, 3)
    nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
    nn.init.zeros_(conv.bias)
    return conv


class EncoderLevel(nn.Sequential):
    """Optional 2x2 average pool, then two (3x3 conv, LeakyReLU(0.2)) layers."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        layers: list[nn.Module] = [nn.AvgPool2d(2)] if downsample else []
        layers += [
            _encoder_conv(in_channels, out_channels),
            nn.LeakyReLU(0.2),
            _encoder_conv(out_channels, out_channels),
            nn.LeakyReLU(0.2),
        ]
        super().__init__(*layers)


class DecoderLevel(nn.Module):
    """Bilinear 2x upsampling, skip concatenation, two styled convs."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, style_dim: int
    ) -> None:
        super().__init__()
        self.conv1 = StyledConv(in_channels + skip_channels, out_channels, style_dim)
        self.conv2 = StyledConv(out_channels, out_channels, style_dim)

    def forward(
        self,
        x: torch.Tensor,
        skip: torch.Tensor,
        ws: list[torch.Tensor],
        noises: list[torch.Tensor],
    ) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.conv1(torch.cat([x, skip], dim=1), ws[0], noises[0])
        return self.conv2(x, ws[1], noises[1])


class StyleUNet(nn.Module):
    """UNet generator whose decoder is styled by a latent: (B, in, H, W) mask -> (B, out, H, W).

    Channels are ``width * (1, 2, 4, 8, 8, ...)`` (capped at ``8 * width``) over ``depth + 1``
    levels; the decoder has ``1 + 2 * depth`` styled convs, each with its own affine and noise
    input. H and W must be multiples of ``size_multiple = 2 ** depth``; callers pad.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        style_dim: int = 256,
        n_mapping: int = 8,
        depth: int = 4,
    ) -> None:
        super().__init__()
        for option, rule, value in (
            ("in_channels", checks.IN_CHANNELS, in_channels),
            ("out_channels", checks.IN_CHANNELS, out_channels),
            ("width", checks.NETWORK_WIDTH, width),
            ("style_dim", checks.STYLE_DIM, style_dim),
            ("n_mapping", checks.MAPPING_LAYERS, n_mapping),
            ("depth", checks.GENERATOR_DEPTH, depth),
        ):
            checks.checked(rule, f"generator {option}", value)
        self.config: dict[str, Any] = {
            "name": "styleunet",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "width": width,
            "style_dim": style_dim,
            "n_mapping": n_mapping,
            "depth": depth,
        }
        self.in_channels = in_channels
        self.style_dim = style_dim
        self.size_multiple = 2**depth
        channels = [width * min(2**i, 8) for i in range(depth + 1)]

        self.encoder = nn.ModuleList(
            EncoderLevel(c_in, c_out, downsample=i > 0)
            for i, (c_in, c_out) in enumerate(
                zip([in_channels, *channels[:-1]], channels, strict=True)
            )
        )
        self.mapping = MappingNetwork(style_dim, n_mapping)
        self.bottleneck = StyledConv(channels[-1], channels[-1], style_dim)
        self.decoder = nn.ModuleList(
            DecoderLevel(channels[i + 1], channels[i], channels[i], style_dim)
            for i in reversed(range(depth))
        )
        self.num_style_layers = 1 + 2 * depth
        self.to_image = nn.Conv2d(channels[0], out_channels, 1)

    def forward(
        self,
        mask: torch.Tensor,
        z: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        mix_prob: float = 0.0,
        shard: tuple[int, int] = (0, 1),
    ) -> torch.Tensor:
        """Image in [-1, 1] for ``mask``; z, mixing and noise are drawn from ``generator``.

        Draw order (fixed, so one mask and one seed give exactly one image): z if not given;
        if ``mix_prob > 0`` the per-sample mixing decisions, z2 and crossover indices; then one
        noise map per styled layer, bottleneck first. ``shard = (rank, world)``: the batch is
        rows ``rank * B .. (rank + 1) * B`` of a global batch of ``world * B``; everything is
        drawn for the global batch and this shard's rows are kept, so data-parallel processes
        together draw exactly what one process would.
        """
        self._check_input(mask)
        batch, device = mask.shape[0], mask.device
        rank, world = shard
        rows = slice(rank * batch, (rank + 1) * batch)
        if z is None:
            z = torch.randn(world * batch, self.style_dim, generator=generator, device=device)
            z = z[rows]
        elif z.shape != (batch, self.style_dim):
            raise InputError(
                f"latent z must have shape ({batch}, {self.style_dim}), got {tuple(z.shape)}"
            )
        ws = self._layer_styles(z, generator, mix_prob, world * batch, rows)

        skips = []
        x = mask
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        skips.pop()  # the deepest level is the bottleneck input, not a skip

        noises = [
            torch.randn(world * batch, 1, h, w_, generator=generator, device=device)[rows]
            for h, w_ in self._noise_sizes(mask.shape[-2], mask.shape[-1])
        ]
        x = self.bottleneck(x, ws[0], noises[0])
        for i, level in enumerate(self.decoder):
            layer = slice(1 + 2 * i, 3 + 2 * i)
            x = level(x, skips.pop(), ws[layer], noises[layer])
        return torch.tanh(self.to_image(x))

    def _check_input(self, mask: torch.Tensor) -> None:
        """Reject wrong ranks, channel counts and sizes with a message naming the fix."""
        if mask.ndim != 4 or mask.shape[1] != self.in_channels:
            raise InputError(
                f"generator expects a mask batch (B, {self.in_channels}, H, W), "
                f"got shape {tuple(mask.shape)}"
            )
        height, width = mask.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise InputError(
                f"generator input size {height}x{width} is not a multiple of "
                f"{self.size_multiple}; pad H and W to multiples of {self.size_multiple}"
            )

    def _layer_styles(
        self,
        z: torch.Tensor,
        generator: torch.Generator | None,
        mix_prob: float,
        n_draw: int,
        rows: slice,
    ) -> list[torch.Tensor]:
        """One w per styled layer; with probability ``mix_prob`` (per sample) w2 takes over from
        a random crossover layer on. Draws are made for ``n_draw`` samples, ``rows`` kept."""
        if not 0.0 <= mix_prob <= 1.0:
            raise InputError(f"mix_prob must be in [0, 1], got {mix_prob}")
        w = self.mapping(z)
        n_layers = self.num_style_layers
        if mix_prob == 0:
            return [w] * n_layers
        device = z.device
        mix = torch.rand(n_draw, generator=generator, device=device)[rows] < mix_prob
        z2 = torch.randn((n_draw, z.shape[1]), generator=generator, device=device)[rows]
        crossover = torch.randint(1, n_layers, (n_draw,), generator=generator, device=device)
        w2 = self.mapping(z2.to(z.dtype))
        # (B, layers): True where sample b takes w2 at that layer
        second = mix[:, None] & (torch.arange(n_layers, device=device) >= crossover[rows, None])
        return [torch.where(second[:, i, None], w2, w) for i in range(n_layers)]

    def _noise_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(H, W) of each styled layer in decoder order: bottleneck, then two per level."""
        depth = len(self.decoder)
        sizes = [(height >> depth, width >> depth)]
        for level in reversed(range(depth)):
            sizes += [(height >> level, width >> level)] * 2
        return sizes


def build_generator(config: dict[str, Any]) -> StyleUNet:
    """Rebuild a generator from its ``config`` (as stored with its weights)."""
    if not isinstance(config, dict):
        raise InputError(f"generator config must be a mapping, got {type(config).__name__}")
    name = config.get("name")
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    options = {k: v for k, v in config.items() if k != "name"}
    try:
        return StyleUNet(**options)
    except TypeError as error:
        raise InputError(f"invalid generator config {options}: {error}") from error
