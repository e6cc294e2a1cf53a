"""Conventional augmentation of real image/mask pairs (cGAN-Seg, "Conventional augmentation").

The paper augments every real training pair with probability ``p_vanilla``: when it fires, each
of ten ops is chosen independently with probability 0.5 and the chosen ops run in a random order.
The ops are histogram equalisation, random crop (resized back to the input size), sharpness,
brightness, contrast, horizontal flip, vertical flip, saturation, Gaussian noise and Gaussian
blur. Only the geometric ops (crop and the two flips) touch the mask.

Every random quantity (whether to augment, which ops, their order and every op parameter) is
drawn from the ``numpy.random.Generator`` passed to :meth:`ConventionalAugment.draw`, apart from
the pixel work, which :meth:`ConventionalAugment.apply` does with kornia's deterministic
functional ops (as DiffAugment draws its policy apart from applying it): a draw is plain data
that can be logged and replayed; ``__call__`` is the two in a row. Kornia's own
random augmentation modules are deliberately not used: they sample from torch's global RNG,
which would make results depend on torch seeding and on DataLoader worker order. With our
sampling, the same rng seed gives the same output bit for bit.

Defaults (strengths are in kornia's [0, 1] intensity space unless noted):

- ``crop_scale=(0.6, 1.0)``: side of the crop window as a fraction of the input side (one
  fraction for both sides, so cell shapes keep their aspect ratio after resizing back).
- ``sharpness=(0.5, 2.0)``: kornia sharpness factor (1 = unchanged, < 1 blurs, > 1 sharpens).
- ``brightness=(-0.1, 0.1)``: additive shift.
- ``contrast=(0.8, 1.2)``: contrast factor around the image mean (PIL/torchvision convention,
  ``kornia.enhance.adjust_contrast_with_mean_subtraction``).
- ``saturation=(0.8, 1.2)``: saturation factor; a no-op unless the image has exactly 3 channels.
- ``noise_std=(0.0, 0.05)``: standard deviation of additive Gaussian noise in the image's
  [-1, 1] units.
- ``blur_sigma=(0.1, 1.0)``: Gaussian blur sigma in pixels; kernel size ``2*ceil(3*sigma)+1``.

Photometric ops clip their result to [-1, 1]; geometric ops keep pixel values (the bilinear crop
resize stays within the input's range). Mask ids are never interpolated: the crop resize uses
nearest-neighbour index lookup and flips only move labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from numpy.random import Generator
from torch import Tensor

from cganseg.errors import InputError

OP_NAMES: tuple[str, ...] = (
    "equalize",
    "crop",
    "sharpness",
    "brightness",
    "contrast",
    "hflip",
    "vflip",
    "saturation",
    "noise",
    "blur",
)
"""All op names, in the order in which their "chosen" coin flips are drawn."""

GEOMETRIC_OPS: frozenset[str] = frozenset({"crop", "hflip", "vflip"})
"""Ops that also transform the mask."""


def _uniform(rng: Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _in_unit_range(image: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Run a kornia enhance op, which expects [0, 1], on a [-1, 1] image and map back."""
    unit = ((image + 1.0) / 2.0).clamp(0.0, 1.0)
    return (fn(unit.unsqueeze(0)).squeeze(0) * 2.0 - 1.0).clamp(-1.0, 1.0)


def _nearest_indices(start: int, length: int, out_size: int, device: torch.device) -> Tensor:
    """Source indices for a nearest ("nearest-exact") resize of ``[start, start+length)``."""
    pos = (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5) * (length / out_size)
    return start + pos.floor().long().clamp(max=length - 1)


@dataclass
class ConventionalAugment:
    """The paper's conventional augmentation, reproducible from a numpy Generator.

    ``ops`` switches ops on or off (default: all of :data:`OP_NAMES`); ``p_op`` is the chance of
    choosing each enabled op (0.5 in the paper; 1.0 forces every enabled op, handy in tests).
    Range parameters are ``(low, high)`` bounds of a uniform draw; see the module docstring.
    """

    p_vanilla: float = 0.5
    p_op: float = 0.5
    ops: tuple[str, ...] = OP_NAMES
    crop_scale: tuple[float, float] = (0.6, 1.0)
    sharpness: tuple[float, float] = (0.5, 2.0)
    brightness: tuple[float, float] = (-0.1, 0.1)
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    noise_std: tuple[float, float] = (0.0, 0.05)
    blur_sigma: tuple[float, float] = (0.1, 1.0)

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        unknown = [name for name in self.ops if name not in OP_NAMES]
        if unknown:
            raise InputError(
                f"unknown augmentation op(s) {unknown}; valid ops are: {', '.join(OP_NAMES)}"
            )
        for name in ("p_vanilla", "p_op"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"augmentation {name} must be in [0, 1], got {value}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise InputError(
                f"augmentation crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}"
            )
        if self.blur_sigma[0] <= 0.0 or self.noise_std[0] < 0.0:
            raise InputError("augmentation blur_sigma must be > 0 and noise_std must be >= 0")

    def sample_ops(self, rng: Generator) -> list[str]:
        """Draw the ops to run, in run order (empty when the pipeline is not applied)."""
        if rng.random() >= self.p_vanilla:
            return []
        chosen = [name for name in OP_NAMES if name in self.ops and rng.random() < self.p_op]
        return [chosen[i] for i in rng.permutation(len(chosen))]

    def draw(self, rng: Generator, shape: tuple[int, int]) -> list[AugmentStep]:
        """Every random choice for one (H, W) ``shape``: the ops in run order with their
        parameters, drawn apart from their application (as DiffAugment's policy is), so that a
        draw can be logged and replayed with :meth:`apply`."""
        height, width = shape
        return [AugmentStep(name, _DRAW[name](self, rng, height, width))
                for name in self.sample_ops(rng)]  # fmt: skip

    def apply(self, image: Tensor, mask: Tensor, steps: list[AugmentStep]) -> tuple[Tensor, Tensor]:
        """Run the ``steps`` of a :meth:`draw` on one (C, H, W) image and its (H, W) mask; no
        randomness here."""
        for step in steps:
            image, mask = _APPLY[step.op](image, mask, **step.params)
        return image, mask

    def move_field(self, field: Tensor, steps: list[AugmentStep],
                   vector: tuple[int, int] | None = None) -> Tensor:  # fmt: skip
        """Move a (K, H, W) field of targets made on the whole image (flows) as :meth:`apply`
        moves the mask: the crop's window resized back by the mask's nearest-neighbour lookup,
        flips flipped; the ``vector`` channels (y, x) of a vector field change sign with their
        axis' flip. Photometric steps leave it as it is. The crop's zoom keeps each vector's
        direction (one scale for both sides, as Cellpose's rescaling of its flows)."""
        for step in steps:
            if step.op == "crop":
                p = step.params
                rows = _nearest_indices(p["top"], p["height"], field.shape[-2], field.device)
                cols = _nearest_indices(p["left"], p["width"], field.shape[-1], field.device)
                field = field[:, rows[:, None], cols[None, :]]
            elif step.op in ("hflip", "vflip"):
                axis = -1 if step.op == "hflip" else -2
                field = field.flip(axis)
                if vector is not None:
                    sign = torch.ones(field.shape[0], 1, 1, dtype=field.dtype)
                    sign[vector[1] if step.op == "hflip" else vector[0]] = -1
                    field = field * sign
        return field

    def __call__(self, image: Tensor, mask: Tensor, rng: Generator) -> tuple[Tensor, Tensor]:
        """Augment one (C, H, W) float image and its (H, W) instance mask: :meth:`draw`, then
        :meth:`apply`."""
        if image.ndim != 3 or mask.shape != image.shape[-2:]:
            raise ValueError(
                f"expected image (C, H, W) and mask (H, W), got {tuple(image.shape)} "
                f"and {tuple(mask.shape)}"
            )
        return self.apply(image, mask, self.draw(rng, tuple(mask.shape)))


@dataclass(frozen=True)
class AugmentStep:
    """One op of a draw and its parameters (plain numbers: a draw can be written as JSON)."""

    op: str
    params: dict[str, float | int]


# Each op has a draw ``(augment, rng, height, width) -> params`` (taking from rng in the order the
# ops run, as before the split: the same seed gives the same draw) and an application
# ``(image, mask, **params) -> (image, mask)`` without randomness.


def _draw_nothing(aug: ConventionalAugment, rng: Generator, height: int, width: int) -> dict:
    return {}


def _draw_crop(aug: ConventionalAugment, rng: Generator, height: int, width: int) -> dict:
    scale = _uniform(rng, aug.crop_scale)
    ch, cw = max(1, round(scale * height)), max(1, round(scale * width))
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    return {"top": top, "left": left, "height": ch, "width": cw}


def _draw_factor(bounds: str, key: str):
    def draw(aug: ConventionalAugment, rng: Generator, height: int, width: int) -> dict:
        return {key: _uniform(rng, getattr(aug, bounds))}

    return draw


def _draw_noise(aug: ConventionalAugment, rng: Generator, height: int, width: int) -> dict:
    return {"std": _uniform(rng, aug.noise_std), "seed": int(rng.integers(0, 2**63 - 1))}


def _equalize(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return _in_unit_range(image, kornia.enhance.equalize), mask


def _crop(image: Tensor, mask: Tensor, top: int, left: int, height: int,
          width: int) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A window resized back to the input size: bilinear for the image, nearest for the mask."""
    full_h, full_w = mask.shape
    window = image[None, :, top : top + height, left : left + width]
    image = F.interpolate(window, size=(full_h, full_w), mode="bilinear", align_corners=False)
    rows = _nearest_indices(top, height, full_h, mask.device)
    cols = _nearest_indices(left, width, full_w, mask.device)
    return image[0], mask[rows[:, None], cols[None, :]]


def _sharpness(image: Tensor, mask: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    return _in_unit_range(image, lambda x: kornia.enhance.sharpness(x, factor)), mask


def _brightness(image: Tensor, mask: Tensor, shift: float) -> tuple[Tensor, Tensor]:
    return _in_unit_range(image, lambda x: kornia.enhance.adjust_brightness(x, shift)), mask


def _contrast(image: Tensor, mask: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    adjust = kornia.enhance.adjust_contrast_with_mean_subtraction
    return _in_unit_range(image, lambda x: adjust(x, factor)), mask


def _hflip(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return image.flip(-1), mask.flip(-1)


def _vflip(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return image.flip(-2), mask.flip(-2)


def _saturation(image: Tensor, mask: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """Saturation is only defined for RGB, so other channel counts pass through unchanged (the
    factor is drawn regardless, so the rng stream does not depend on the channel count)."""
    if image.shape[0] != 3:
        return image, mask
    return _in_unit_range(image, lambda x: kornia.enhance.adjust_saturation(x, factor)), mask


def _noise(image: Tensor, mask: Tensor, std: float, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator(device=image.device)
    gen.manual_seed(seed)
    noise = torch.randn(image.shape, generator=gen, device=image.device, dtype=image.dtype)
    return (image + std * noise).clamp(-1.0, 1.0), mask


def _blur(image: Tensor, mask: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    # Reflect padding needs a half-width below the image side, so cap it on tiny images.
    half = min(math.ceil(3 * sigma), min(mask.shape) - 1)
    size = 2 * half + 1
    blurred = kornia.filters.gaussian_blur2d(
        image[None], (size, size), (sigma, sigma), border_type="reflect"
    )
    return blurred[0].clamp(-1.0, 1.0), mask


_DRAW: dict[str, Callable[..., dict]] = {
    "equalize": _draw_nothing,
    "crop": _draw_crop,
    "sharpness": _draw_factor("sharpness", "factor"),
    "brightness": _draw_factor("brightness", "shift"),
    "contrast": _draw_factor("contrast", "factor"),
    "hflip": _draw_nothing,
    "vflip": _draw_nothing,
    "saturation": _draw_factor("saturation", "factor"),
    "noise": _draw_noise,
    "blur": _draw_factor("blur_sigma", "sigma"),
}
_APPLY: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "equalize": _equalize,
    "crop": _crop,
    "sharpness": _sharpness,
    "brightness": _brightness,
    "contrast": _contrast,
    "hflip": _hflip,
    "vflip": _vflip,
    "saturation": _saturation,
    "noise": _noise,
    "blur": _blur,
}
