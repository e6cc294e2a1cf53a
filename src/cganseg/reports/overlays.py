"""Colour overlays of instance masks on microscopy images, for reports and visual checks.

Each instance gets a translucent colour fill and an opaque outline in the same colour, so
merged or split cells in a cGAN-Seg prediction (Zargari et al., iScience 2024) are easy to spot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.color import label2rgb
from skimage.segmentation import find_boundaries

from cganseg.data.io import write_png
from cganseg.errors import InputError

FILL_ALPHA = 0.3


def unit_gray(image: np.ndarray) -> np.ndarray:
    """2D panel in [0, 1] of a normalised (C, H, W) image in [-1, 1], channels averaged.

    A fixed mapping, unlike :func:`_display_gray`'s stretch, so a generated image and the real one
    beside it keep their true brightness relative to each other.
    """
    return np.clip((image.mean(axis=0) + 1) / 2, 0, 1)


def _display_gray(image: np.ndarray) -> np.ndarray:
    """2D float image in [0, 1] from a 2D or (C, H, W) image of any dtype and range.

    Channels are averaged; intensities are stretched between the 1st and 99th percentile so
    normalised floats and raw 8/16-bit images both display with full contrast.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image.mean(axis=0)
    if image.ndim != 2:
        raise InputError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    low, high = np.percentile(image, (1, 99)) if image.size else (0.0, 0.0)
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def overlay_labels(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3): ``image`` in grey, instances filled translucently and outlined."""
    gray = _display_gray(image)
    labels = np.asarray(labels)
    if labels.shape != gray.shape:
        raise InputError(f"labels shape {labels.shape} does not match image shape {gray.shape}")
    filled = label2rgb(labels, image=gray, alpha=FILL_ALPHA, bg_label=0, kind="overlay")
    colours = label2rgb(labels, bg_label=0, kind="overlay")
    outline = find_boundaries(labels, mode="inner", background=0) & (labels > 0)
    filled[outline] = colours[outline]
    return np.round(np.clip(filled, 0.0, 1.0) * 255).astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """Write the overlay as PNG atomically, so a crash never leaves a half-written file."""
    path = Path(path)
    write_png(path, overlay_labels(image, labels))
    return path


def generation_row(
    labels: np.ndarray, generated: Sequence[np.ndarray], real: np.ndarray | None = None
) -> list[np.ndarray]:
    """Grid panels of a generation: the mask, each generated (C, H, W) image and, when given,
    the real image, all on one brightness scale (:func:`unit_gray`)."""
    mask = overlay_labels(np.zeros((1, *labels.shape), np.float32), labels)
    row = [mask, *(unit_gray(g) for g in generated)]
    return row if real is None else [*row, unit_gray(real)]
