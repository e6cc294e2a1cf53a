"""``components``: the paper's 2 classes (background, cell); cells are connected components.

Foreground is ``argmax != 0`` (with 2 classes ``p(cell) > 0.5``), holes smaller than
``min_size`` are filled, objects smaller than ``min_size`` dropped, and the remaining connected
components are the cells. Touching cells merge into one object: the known limitation of the
2-class output, which the watershed and flow modes address. With 3 classes the boundary class
counts as foreground.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cganseg.data.targets import labels_to_classes
from cganseg.instances.base import InstanceMode, Reduce
from cganseg.instances.cleanup import class_output, components, numbered
from cganseg.losses.ce_dice import CEDiceLoss


def components_instances(probs: np.ndarray, min_size: int = 15) -> np.ndarray:
    """Instance labels (H, W) int32, consecutive 1..N: the connected foreground components of
    class probabilities (2 or 3, H, W)."""
    classes = np.argmax(class_output(probs), axis=0)
    return numbered(components(classes != 0, min_size))


class Components(InstanceMode):
    """2 (or 3) classes, CE + Dice, connected components."""

    name = "components"
    summary = "2 classes"

    def output_channels(self, n_classes: int) -> int:
        return n_classes

    def targets(self, labels: np.ndarray, n_classes: int) -> torch.Tensor:
        return torch.from_numpy(labels_to_classes(labels, n_classes))

    def loss(self, reduce: Reduce = None) -> nn.Module:
        return CEDiceLoss(reduce=reduce)

    def to_labels(self, output: np.ndarray, min_size: int, **thresholds: float) -> np.ndarray:
        return components_instances(output, min_size)

    def describe(self, min_size: int, **thresholds: float) -> str:
        return ("connected components (4-connected) of the pixels whose most probable class is "
                f"cell; objects smaller than {min_size} px are dropped.")  # fmt: skip
