"""Intensity normalisation to [-1, 1].

Microscopy images come as 8-bit, 16-bit (often using a few hundred grey levels of 65536) or float.
Dividing by the dtype's maximum would leave a 16-bit image almost black, so each image and each
channel is mapped from its own low/high percentiles (default 1 and 99.8, robust to hot pixels) to
[-1, 1] and clipped. [-1, 1] is also the range of the generator's tanh output in cGAN-Seg.
A flat channel (high == low) becomes 0.
"""

from __future__ import annotations

import numpy as np

from cganseg.errors import InputError

DEFAULT_PERCENTILES = (1.0, 99.8)


def normalize_percentile(
    image: np.ndarray, low: float = DEFAULT_PERCENTILES[0], high: float = DEFAULT_PERCENTILES[1]
) -> np.ndarray:
    """Map each channel of a (C, H, W) image from its [low, high] percentiles to [-1, 1].

    A 2-D array is refused, not guessed: (H, W) read as (C, H, W) would broadcast into an
    H x H x W array (gigabytes); :func:`cganseg.data.io.image_to_chw` brings any layout to
    (C, H, W) first."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] > min(image.shape[1:]):
        raise InputError(
            f"normalize_percentile takes a (C, H, W) image (channels first, the short axis), got "
            f"shape {image.shape}; use image[None] for a 2-D image, or image_to_chw(image)"
        )
    x = image.astype(np.float32, copy=False)
    flat = x.reshape(x.shape[0], -1)
    lo, hi = np.percentile(flat, [low, high], axis=1).astype(np.float32)
    scale = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
    out = 2.0 * (x - lo[:, None, None]) / scale[:, None, None] - 1.0
    out[hi <= lo] = 0.0
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)
