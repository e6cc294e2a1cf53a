"""Pixel-level Dice coefficient on foreground (label > 0).

The cGAN-Seg paper (Zargari et al., iScience 2024, "Evaluation") reports Dice = 2|X∩Y|/(|X|+|Y|)
next to the object-level F-score. Per-image Dice is averaged over a data set (the paper's
convention); the pooled variant sums the pixel counts first, so large images weigh more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DiceCounts:
    """Foreground pixel counts of one image pair; add them up for a pooled Dice."""

    intersection: int
    gt_area: int
    pred_area: int

    def __add__(self, other: DiceCounts) -> DiceCounts:
        return DiceCounts(
            self.intersection + other.intersection,
            self.gt_area + other.gt_area,
            self.pred_area + other.pred_area,
        )

    @property
    def dice(self) -> float:
        """2|X∩Y| / (|X| + |Y|); 1.0 when both are empty (nothing to find, nothing found)."""
        total = self.gt_area + self.pred_area
        return 1.0 if total == 0 else 2.0 * self.intersection / total


def dice_counts(gt: np.ndarray, pred: np.ndarray) -> DiceCounts:
    """Foreground intersection and areas of two label (or binary) images of equal shape."""
    if gt.shape != pred.shape:
        raise ValueError(f"label images differ in shape: gt {gt.shape} vs pred {pred.shape}")
    g = np.asarray(gt) > 0
    p = np.asarray(pred) > 0
    return DiceCounts(
        intersection=int(np.count_nonzero(g & p)),
        gt_area=int(np.count_nonzero(g)),
        pred_area=int(np.count_nonzero(p)),
    )


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Foreground Dice of one image pair; 1.0 when both images are empty."""
    return dice_counts(gt, pred).dice
