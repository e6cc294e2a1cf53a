"""Cell-size rescaling (issue 16): the network sees cells of one canonical diameter.

Cellpose rescales every training image so that its cells have one diameter (30 px for its
cytoplasm models) and every new image by the ratio of that diameter to the image's own cell
diameter. A network then learns one cell size instead of many, a fixed training crop holds a
similar number of cells whatever the magnification, and one model serves several magnifications.

A cell's diameter is that of the disc of its area (``2 sqrt(area / pi)``, scikit-image's
``equivalent_diameter_area``); an image's is the median over its cells (Cellpose's
``utils.diameters``), so a few huge or tiny objects do not move it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cganseg import checks
from cganseg.data.dataset import Sample
from cganseg.errors import InputError


def cell_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter of the cells of an instance mask (0.0 when it has none)."""
    ids, areas = np.unique(np.asarray(labels), return_counts=True)  # not bincount: ids may
    areas = areas[ids > 0]  # be huge (2^40)
    if areas.size == 0:
        return 0.0
    return float(np.median(2.0 * np.sqrt(areas / math.pi)))


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(H, W) times ``factor``, rounded, at least 1 pixel."""
    return max(1, round(shape[-2] * factor)), max(1, round(shape[-1] * factor))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (C, H, W) float array resized to ``shape``: bilinear, antialiased when shrinking (so
    fine texture does not alias into false edges)."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    shrink = shape[0] < image.shape[-2] or shape[1] < image.shape[-1]
    out = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False,
                        antialias=shrink)  # fmt: skip
    return out[0].numpy()


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An instance mask resized to ``shape`` by nearest-neighbour lookup (ids never blend)."""
    if tuple(labels.shape) == tuple(shape):
        return labels
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def to_diameter(sample: Sample, target: float, fallback: float) -> Sample:
    """``sample`` rescaled so its cells have diameter ``target`` (an image without cells by
    ``target / fallback``, the training set's diameter); InputError naming the image when the
    factor leaves :data:`~cganseg.checks.SCALE_RANGE` (cells of 1-2 px, a mask of specks)."""
    own = cell_diameter(sample.labels)
    factor = target / (own if own > 0 else fallback)
    try:
        checks.scale_factor(factor)
    except checks.ValueProblem as exc:
        raise InputError(
            f"training image {sample.name}: its cells are {own if own > 0 else fallback:.3g} px "
            f"across; rescaling them to --cell-diameter {target:g} {exc}: check its mask, or "
            "train without --cell-diameter"
        ) from None
    shape = scaled_shape(sample.labels.shape, factor)
    return Sample(sample.name, resize_image(sample.image, shape),
                  resize_labels(sample.labels, shape))  # fmt: skip


def median_diameter(samples: list[Sample]) -> float:
    """The training set's cell diameter: the median of its images' diameters (images with
    cells only); 0.0 when no image has a cell."""
    values = [d for d in (cell_diameter(s.labels) for s in samples) if d > 0]
    return float(np.median(values)) if values else 0.0
