"""Easy and hard test images, as in the paper's Table 2.

The paper reports F-scores separately on "easy" test images (isolated cells) and "hard" ones
(touching cells, dense colonies), because synthetic dense masks are meant to help with the hard
ones. An image counts as hard when at least two of its ground-truth cells share a boundary
(4-adjacent pixels of two different labels) or when cells cover at least ``dense_fraction`` of
its area; otherwise it is easy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: cell area fraction from which an image counts as a dense scene even without touching cells
DENSE_FRACTION = 0.3


@dataclass(frozen=True)
class Hardness:
    """Why an image is easy or hard."""

    touching_pairs: int
    cell_fraction: float
    hard: bool


def touching_pairs(labels: np.ndarray) -> int:
    """Number of distinct pairs of cells that share a boundary (4-adjacency)."""
    pairs = []
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:, :], labels[:-1, :])):
        edge = (a != b) & (a > 0) & (b > 0)
        if edge.any():
            lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
            pairs.append(np.stack([lo, hi], axis=1))
    if not pairs:
        return 0
    return len(np.unique(np.concatenate(pairs), axis=0))


def hardness(labels: np.ndarray, dense_fraction: float = DENSE_FRACTION) -> Hardness:
    """Classify a ground-truth label image as easy or hard (see the module docstring)."""
    n_touching = touching_pairs(labels)
    fraction = float((labels > 0).mean()) if labels.size else 0.0
    return Hardness(n_touching, fraction, n_touching > 0 or fraction >= dense_fraction)
