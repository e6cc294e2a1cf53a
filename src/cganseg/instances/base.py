"""What an instance mode is: everything that depends on how a segmenter's output becomes cells.

A mode (issue 28) decides the segmenter's output channels, its training targets and loss, what
tiles blend and what an exported network ends in, how an output becomes instance labels, which
post-processing thresholds can be tuned on validation images (with their grid), the mask the
cGAN-Seg generator and D2 see, and what an exported package says about turning its output into
cells. Every other module asks the mode object (:func:`cganseg.instances.mode`) and never tests
its name, so a new way of making cells is one file here and one line in the registry.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from cganseg.data.targets import one_hot

#: sums a tensor over data-parallel processes (the Dice terms' global batch), or None
Reduce = Callable[[torch.Tensor], torch.Tensor] | None


class InstanceMode(ABC):
    """One way of making cells from a segmenter's output (see the module docstring)."""

    #: the name runs, checkpoints and ``--instances`` use
    name: ClassVar[str]
    #: one line on what the segmenter learns, for reports (the demo's table)
    summary: ClassVar[str]
    #: what an exported network ends in (:class:`cganseg.models.exported.ProbabilityNet`'s
    #: ``output``): ``classes`` (softmax) or ``flows`` (flows beside the cell probability)
    output_kind: ClassVar[str] = "classes"
    #: the exported output tensor: its id, one line on it, and the package's tag for it
    output_tensor: ClassVar[str] = "probabilities"
    output_summary: ClassVar[str] = "class probabilities (softmax)"
    output_tag: ClassVar[str] = "semantic-segmentation"
    #: post-processing thresholds tuned on the validation images, each with its grid (the
    #: default first, so that a tie keeps it); empty: nothing to tune
    threshold_grid: ClassVar[Mapping[str, tuple[float, ...]]] = {}
    #: targets made once per training image and moved with each crop and its augmentation
    #: (flows: a whole cell decides them, and computing them per crop was a large share of a CPU
    #: step), given as the (y, x) channels of their vector field, which flips negate; None: the
    #: targets are made per crop from the augmented mask
    image_target_vector: ClassVar[tuple[int, int] | None] = None

    def check_classes(self, n_classes: int) -> str | None:
        """Why this mode cannot work with ``n_classes`` classes, or None."""
        return None

    @abstractmethod
    def output_channels(self, n_classes: int) -> int:
        """Channels of the segmenter's output."""

    @abstractmethod
    def targets(self, labels: np.ndarray, n_classes: int) -> torch.Tensor:
        """What the loss compares the output with, for an instance mask (H, W)."""

    @abstractmethod
    def loss(self, reduce: Reduce = None) -> nn.Module:
        """The segmentation loss (output, targets) -> scalar."""

    def blend(self, raw: torch.Tensor) -> torch.Tensor:
        """What overlapping tiles of a prediction blend: class probabilities by default."""
        return raw.softmax(dim=1)

    def cell_probability(self, output: np.ndarray) -> np.ndarray:
        """Per pixel (H, W), the probability of lying in a cell, from a blended output (K, H, W):
        one minus the background's by default."""
        return 1.0 - output[0]

    def foreground(self, output: np.ndarray, **thresholds: float) -> np.ndarray:
        """The pixels (H, W) that :meth:`to_labels` may put in a cell, for a blended output
        (K, H, W): those whose most probable class is not the background, by default."""
        return output.argmax(axis=0) != 0

    def output_names(self, n_classes: int) -> list[str]:
        """The names of the exported output's channels."""
        return ["background", "cell"] if n_classes == 2 else ["background", "interior", "boundary"]

    def describe_output(self, n_classes: int) -> str:
        """The exported output, in words (a package's README)."""
        names = ", ".join(self.output_names(n_classes))
        return (f"`{self.output_tensor}`: (batch, channel, y, x), the softmax over the classes "
                f"{names}.")  # fmt: skip

    @abstractmethod
    def to_labels(self, output: np.ndarray, min_size: int, **thresholds: float) -> np.ndarray:
        """Instance labels (H, W) int32, consecutive 1..N, from a blended output (K, H, W)."""

    def threshold_search(
        self, output: np.ndarray, min_size: int
    ) -> Iterator[tuple[dict[str, float], np.ndarray]]:
        """(thresholds, labels) for every point of :attr:`threshold_grid`, in grid order (the
        first name varies slowest); a mode may share work between points."""
        names = list(self.threshold_grid)
        for values in itertools.product(*self.threshold_grid.values()):
            point = dict(zip(names, values, strict=True))
            yield point, self.to_labels(output, min_size, **point)

    def class_probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """The segmenter's output as class probabilities (B, K, H, W): what cGAN-Seg turns into
        the mask D2 and the generator see."""
        return raw.float().softmax(dim=1)

    def mask_classes(self, n_classes: int) -> int:
        """Classes of the masks the generator and D2 see."""
        return n_classes

    def target_mask(self, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
        """The one-hot mask (B, K, H, W) the generator and D2 see for a batch of targets."""
        return one_hot(targets, n_classes)

    @abstractmethod
    def describe(self, min_size: int, **thresholds: float) -> str:
        """How cganseg makes cells of the exported output, in words (a package's README)."""

    def prepare(self) -> None:  # noqa: B027 - most modes have nothing to prepare
        """Work to do once before training starts (not again in every data-loader worker)."""

