"""Turn instance label images into per-pixel class targets for the segmenter.

cGAN-Seg (Zargari et al., iScience 2024) trains its segmenter Seg with cross-entropy + Dice
against class masks (paper Eq. 10-17). With two classes (background / cell) touching cells form
one blob, so the three-class option adds a *boundary* class: each cell's own inner boundary
pixels. Touching cells are then separated by boundary pixels, and every cell larger than about
3x3 pixels keeps an interior core that :mod:`cganseg.instances.watershed` uses as a watershed
seed. Cells too thin to have a core become all-boundary.

What the segmenter learns in each instance mode (3 classes, 2 classes, flows) is chosen by the
mode objects of :mod:`cganseg.instances`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import find_boundaries

from cganseg.errors import InputError

BOUNDARY = 2  # the class of cell-edge pixels with three classes (0 background, 1 interior)


def labels_to_classes(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Map an instance mask (H, W) to int64 class targets (H, W).

    ``n_classes == 2``: 0 background, 1 cell. ``n_classes == 3``: 0 background, 1 interior,
    2 boundary (pixels of a cell that touch another label or the background).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"label image must be 2D (H, W), got shape {labels.shape}")
    if n_classes not in (2, 3):
        raise InputError(f"n_classes must be 2 or 3, got {n_classes}")
    classes = (labels > 0).astype(np.int64)
    if n_classes == 3:
        # mode="inner" keeps boundary pixels inside their own cell, so between two touching
        # cells both sides' edge pixels become boundary and the background is untouched.
        boundary = find_boundaries(labels, connectivity=1, mode="inner", background=0)
        classes[boundary & (labels > 0)] = BOUNDARY
    return classes


def one_hot(classes: torch.Tensor, n_classes: int, dtype: torch.dtype = torch.float32):
    """Class indices (..., H, W) -> one channel per class (..., K, H, W): the mask as the
    generator, D2 and the Dice term see it."""
    return F.one_hot(classes, n_classes).movedim(-1, -3).to(dtype)
