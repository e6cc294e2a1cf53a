"""A trained segmenter's post-processing as one frozen value (issue 28): mode, size, thresholds.

Everything that turns a trained network's output into cells, apart from the network: the
instance mode, the smallest object kept, the mode's thresholds (tuned on validation images at
the end of training) and the cell-size rescaling the network was trained with (the diameter it
sees cells at, and the training images' own). It is saved as one checkpoint entry
(``postprocessing``) and checked field by field by the rules of :mod:`cganseg.checks` whatever
wrote it. Being frozen, one value can serve many threads (the napari plugin's workers): a change
is a new value (:meth:`PostProcessing.replace`), never an edit of a shared one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cganseg import checks
from cganseg.data.flows import CELLPROB_THRESHOLD, FLOW_THRESHOLD
from cganseg.data.rescale import resize_image
from cganseg.errors import InputError
from cganseg.instances import MODES, mode, stored_name
from cganseg.instances.base import InstanceMode
from cganseg.instances.cleanup import fit_labels

#: the checkpoint entry that holds it (checkpoint version 4 on; before, its fields were
#: entries of their own, and older still had no ``instances``)
ENTRY = "postprocessing"


def _instances(name: str, value: Any) -> str:
    if value not in MODES:
        raise checks.ValueProblem(f"{name} must be one of {', '.join(MODES)}, got {value!r}")
    return value


#: the rule each field must pass
RULES = {
    "instances": _instances,
    "min_size": checks.MIN_SIZE,
    "cellprob_threshold": checks.CELLPROB_THRESHOLD,
    "flow_threshold": checks.FLOW_THRESHOLD,
    "cell_diameter": checks.CELL_DIAMETER,
    "train_diameter": checks.TRAIN_DIAMETER,
}


@dataclass(frozen=True)
class PostProcessing:
    """How cells come out of a segmenter's output (module docstring).

    ``cell_diameter``: the diameter (px) the network saw cells at (None: images as they are);
    ``train_diameter``: the training images' own median cell diameter, what images to segment
    are assumed to have unless told (:mod:`cganseg.data.rescale`)."""

    instances: str
    min_size: int = 15
    cellprob_threshold: float = CELLPROB_THRESHOLD
    flow_threshold: float = FLOW_THRESHOLD
    cell_diameter: float | None = None
    train_diameter: float | None = None

    def __post_init__(self) -> None:
        for name, rule in RULES.items():
            object.__setattr__(self, name, checks.checked(rule, name, getattr(self, name)))

    @property
    def mode(self) -> InstanceMode:
        """The instance mode's object."""
        return mode(self.instances)

    @property
    def thresholds(self) -> dict[str, float]:
        """The values of the mode's tunable thresholds (none for the class modes)."""
        return {name: getattr(self, name) for name in self.mode.threshold_grid}

    def to_labels(self, output: np.ndarray) -> np.ndarray:
        """Instance labels (H, W) int32 from a blended output (K, H, W)."""
        return self.mode.to_labels(output, self.min_size, **self.thresholds)

    def labels_at(self, output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Instance labels (``shape``) from a blended output of a smaller size: found there,
        then fitted to the cells' outline at ``shape``
        (:func:`~cganseg.instances.cleanup.fit_labels`)."""
        labels = self.to_labels(output)
        if tuple(labels.shape) == tuple(shape):
            return labels
        return self.fit_to(labels, resize_image(output, shape), self.thresholds)

    def fit_to(self, labels: np.ndarray, full: np.ndarray, thresholds: dict[str, float]
               ) -> np.ndarray:  # fmt: skip
        """``labels`` found with ``thresholds`` in a smaller output, brought to the size of
        ``full``, that output resized (once per image: a threshold search fits many)."""
        return fit_labels(labels, self.mode.foreground(full, **thresholds))

    def replace(self, **changes: Any) -> PostProcessing:
        """A new value with ``changes`` (each checked as at creation)."""
        return dataclasses.replace(self, **changes)

    def entry(self) -> dict[str, Any]:
        """The checkpoint entry: plain data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, payload: Mapping[str, Any], n_classes: int,
                        source: str | Path | None = None) -> PostProcessing:  # fmt: skip
        """The value a checkpoint stores (its ``postprocessing`` entry, or the separate entries
        of versions 1-3, a missing mode by the class count); a stored field that fails its rule
        is "not a usable cganseg model: FIELD ..." naming ``source``."""
        refuse = f"{checks.NOT_USABLE}: {ENTRY}"
        stored = payload.get(ENTRY, payload)
        if not isinstance(stored, Mapping):
            raise InputError(f"{refuse} must be a mapping, got {stored!r}", source)
        unknown = sorted(map(str, set(stored) - set(RULES))) if ENTRY in payload else []
        if unknown:
            raise InputError(f"{refuse} has unknown entries: {', '.join(unknown)}", source)
        fields = {name: stored[name] for name in RULES if name in stored}
        if fields.get("instances") is None:
            fields["instances"] = stored_name(n_classes)
        try:  # each field by its rule (__post_init__), named as the checkpoint's
            return cls(**fields)
        except InputError as exc:
            raise InputError(f"{checks.NOT_USABLE}: {exc}", source) from None
