"""Differentiable augmentation (DiffAugment) of the images shown to cGAN-Seg's discriminator D1.

DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020) augments both the real and the generated images, with the *same* random
transform, before the discriminator, and does so with differentiable operations so that the
generator still gets gradients. It keeps D1 from memorising the few real images of a small data
set. cGAN-Seg (Zargari et al., iScience 2024, Fig. 1A) applies it with probability ``p_diff``,
each of its five ops chosen with probability 0.5 and the chosen ops run in random order.

Ops and ranges (those of the DiffAugment reference definitions, which were written for images in
[-1, 1], the range used here):

- brightness: add ``U(-0.5, 0.5)``;
- saturation: scale each pixel's deviation from its channel mean by ``U(0, 2)``; with one
  channel that deviation is zero, so the op is an exact no-op on grayscale images;
- contrast: scale the deviation from the image mean by ``U(0.5, 1.5)``;
- translation: shift by an integer in ``[-r, r]`` pixels per axis, ``r = round(translation * side)``
  (default 1/8 of the side); uncovered pixels become 0, mid-grey in [-1, 1];
- cutout: zero a ``round(cutout * H) x round(cutout * W)`` rectangle (default half the sides)
  whose centre is uniform over the image (clipped at the border).

Everything is drawn per sample: whether the sample is augmented at all (probability ``p_diff``;
per sample rather than per batch, so the fraction of augmented images D1 sees is ``p_diff`` at any
batch size, and at the paper's batch size of one the two coincide), which ops, their order and
their parameters. ``sample_policy`` draws all of this once and ``apply_policy`` applies it, so the
same policy can be applied to a real and a fake batch. All random numbers come from a
``torch.Generator``, always in the same number, so a seed fixes the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cganseg.errors import InputError

OPS = ("brightness", "saturation", "contrast", "translation", "cutout")


@dataclass(frozen=True)
class DiffAugmentPolicy:
    """One random draw of DiffAugment for a batch of ``B`` images of ``image_size``.

    ``active[b, k]`` says whether op ``OPS[k]`` runs on sample ``b`` (already False for samples not
    augmented); ``order[b]`` is the permutation of op indices in which the ops run.
    """

    active: torch.Tensor  # (B, 5) bool
    order: torch.Tensor  # (B, 5) int64
    brightness: torch.Tensor  # (B,) additive shift
    saturation: torch.Tensor  # (B,) factor
    contrast: torch.Tensor  # (B,) factor
    shift: torch.Tensor  # (B, 2) int64, (dy, dx)
    cutout_center: torch.Tensor  # (B, 2) int64, (row, column)
    max_shift: tuple[int, int]
    cutout_size: tuple[int, int]
    image_size: tuple[int, int]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"DiffAugment {name} must be between 0 and 1, got {value}")


def sample_policy(
    batch_size: int,
    p_diff: float,
    *,
    generator: torch.Generator,
    device: torch.device | str,
    image_size: tuple[int, int],
    translation: float = 0.125,
    cutout: float = 0.5,
    keep: slice | None = None,
) -> DiffAugmentPolicy:
    """Draw one DiffAugment policy for ``batch_size`` images.

    Tensors are drawn on ``generator.device``; the op parameters are moved to ``device``, while
    ``active`` and ``order``, which steer the Python loop of :func:`apply_policy`, stay where they
    were drawn (a CPU generator then costs no device-to-host wait per step). ``translation`` and
    ``cutout`` are fractions of the image side (maximum shift, hole size). ``keep``: only these
    rows of the batch (a data-parallel process's share of the global batch's draw).
    """
    _check_fraction("p_diff", p_diff)
    _check_fraction("translation", translation)
    _check_fraction("cutout", cutout)
    h, w = image_size
    if batch_size < 1 or h < 1 or w < 1:
        raise ValueError(f"need a non-empty batch and image, got {batch_size} x {h}x{w}")
    b, n_ops = batch_size, len(OPS)

    def rand(*size: int) -> torch.Tensor:
        return torch.rand(size, generator=generator, device=generator.device)

    def randint(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (b,), generator=generator, device=generator.device)

    augmented = rand(b) < p_diff
    chosen = rand(b, n_ops) < 0.5
    order = rand(b, n_ops).argsort(dim=1)
    brightness = rand(b) - 0.5
    saturation = rand(b) * 2.0
    contrast = rand(b) + 0.5
    max_shift = (int(h * translation + 0.5), int(w * translation + 0.5))
    shift = torch.stack([randint(-m, m + 1) for m in max_shift], dim=1)
    cutout_size = (int(h * cutout + 0.5), int(w * cutout + 0.5))
    # An even-sized hole has no centre pixel, so its centre may also sit on the far edge.
    center = torch.stack(
        [randint(0, side + 1 - size % 2) for side, size in zip((h, w), cutout_size, strict=True)],
        dim=1,
    )
    rows = slice(None) if keep is None else keep
    return DiffAugmentPolicy(
        active=(chosen & augmented[:, None])[rows],
        order=order[rows],
        brightness=brightness[rows].to(device),
        saturation=saturation[rows].to(device),
        contrast=contrast[rows].to(device),
        shift=shift[rows].to(device),
        cutout_center=center[rows].to(device),
        max_shift=max_shift,
        cutout_size=cutout_size,
        image_size=(h, w),
    )


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.to(x.dtype).view(-1, 1, 1, 1)


def _brightness(x: torch.Tensor, policy: DiffAugmentPolicy) -> torch.Tensor:
    return x + _per_sample(policy.brightness, x)


def _saturation(x: torch.Tensor, policy: DiffAugmentPolicy) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(policy.saturation, x) + mean


def _contrast(x: torch.Tensor, policy: DiffAugmentPolicy) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(policy.contrast, x) + mean


def _translation(x: torch.Tensor, policy: DiffAugmentPolicy) -> torch.Tensor:
    """Zero-pad by the largest possible shift, then gather each sample's shifted window."""
    b, c, h, w = x.shape
    pad_y, pad_x = policy.max_shift
    padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y))
    rows = torch.arange(h, device=x.device) + pad_y - policy.shift[:, :1]  # (B, h)
    cols = torch.arange(w, device=x.device) + pad_x - policy.shift[:, 1:]  # (B, w)
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * pad_x))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def _cutout(x: torch.Tensor, policy: DiffAugmentPolicy) -> torch.Tensor:
    """Multiply by a 0/1 mask rather than assign: the input stays untouched, gradients flow."""
    _, _, h, w = x.shape
    inside = []
    for axis, (side, size) in enumerate(zip((h, w), policy.cutout_size, strict=True)):
        start = policy.cutout_center[:, axis : axis + 1] - size // 2
        positions = torch.arange(side, device=x.device)
        inside.append((positions >= start) & (positions < start + size))  # (B, side)
    hole = inside[0][:, :, None] & inside[1][:, None, :]
    return x * (~hole).unsqueeze(1).to(x.dtype)


_FUNCTIONS: tuple[Callable[[torch.Tensor, DiffAugmentPolicy], torch.Tensor], ...] = (
    _brightness,
    _saturation,
    _contrast,
    _translation,
    _cutout,
)


def apply_policy(x: torch.Tensor, policy: DiffAugmentPolicy) -> torch.Tensor:
    """Apply ``policy`` to a batch (B, C, H, W); returns ``x`` itself when no sample is augmented.

    At each of the five steps every sample runs the op its order names there (if active); each op
    is computed on the whole batch and kept only for the samples that run it.
    """
    n = policy.active.shape[0]
    if x.ndim != 4 or x.shape[0] != n or tuple(x.shape[-2:]) != policy.image_size:
        raise ValueError(
            f"policy is for {n} images of {policy.image_size}, got a batch of shape "
            f"{tuple(x.shape)}"
        )
    # Op index run by each sample at each step, -1 for none; on the host, where it was drawn.
    schedule = torch.where(policy.active.gather(1, policy.order), policy.order, -1).cpu()
    for step in range(len(OPS)):
        current = x
        for op in schedule[:, step].unique().tolist():
            if op < 0:
                continue
            selected = (schedule[:, step] == op).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(selected, _FUNCTIONS[op](current, policy), x)
    return x
