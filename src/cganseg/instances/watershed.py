"""``watershed``: 3 classes (background, interior, boundary); a seeded watershed splits cells.

Connected components of the interior class are seeds (seeds smaller than ``min_size // 4`` are
noise and dropped, because a cell of ``min_size`` pixels has an interior core of roughly a
quarter of its area once its one-pixel boundary ring is removed). A seeded watershed on the
inverted interior probability, restricted to the foreground (``argmax != 0``), grows the seeds
until they meet, so touching cells separate along the boundary class. Foreground components that
contain no seed (cells too small to have a predicted core) are kept as objects of their own.
With 2 classes there is no boundary class: the cells are the foreground's components.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label
from skimage.segmentation import watershed

from cganseg.instances.cleanup import class_output, components, drop_small, numbered
from cganseg.instances.components import Components


def watershed_instances(probs: np.ndarray, min_size: int = 15) -> np.ndarray:
    """Instance labels (H, W) int32, consecutive 1..N, from class probabilities (3, H, W)."""
    probs = class_output(probs)
    classes = np.argmax(probs, axis=0)
    if probs.shape[0] != 3:
        return numbered(components(classes != 0, min_size))
    foreground = classes != 0
    seeds = drop_small(label(classes == 1, connectivity=1), min_size // 4)
    grown = watershed(-probs[1], markers=seeds, mask=foreground, connectivity=1)
    unseeded = label(foreground & (grown == 0), connectivity=1)
    unseeded[unseeded > 0] += grown.max()
    return numbered(drop_small(np.where(grown > 0, grown, unseeded), min_size))


class Watershed(Components):
    """3 classes, CE + Dice, seeded watershed on the interior class."""

    name = "watershed"
    summary = "3 classes"

    def check_classes(self, n_classes: int) -> str | None:
        if n_classes != 3:
            return "instances watershed needs 3 classes (boundary seeds); use components"
        return None

    def to_labels(self, output: np.ndarray, min_size: int, **thresholds: float) -> np.ndarray:
        return watershed_instances(output, min_size)

    def describe(self, min_size: int, **thresholds: float) -> str:
        return ("pixels whose most probable class is interior are seeds; a watershed on the "
                "background probability grows them over interior and boundary pixels; objects "
                f"smaller than {min_size} px are dropped.")  # fmt: skip
