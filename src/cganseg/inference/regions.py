"""Large images segmented region by region, so that memory stays bounded (issue 32).

Tiling (:mod:`cganseg.inference.tiling`) bounds what the *network* sees at once, but the blended
outputs, the rescaled copies and the flow following of a whole image are as large as the image:
about 72 bytes per pixel, 5 GB for an 8192x8192 image. Here the image is cut into square *cores*
that cover it without overlap; each core is segmented with a margin around it (the whole
pipeline: rescaling, network, instance labels), and a cell is kept from the region whose core
holds its centroid. A cell that straddles two cores is therefore segmented whole, inside one
region's margin, and written once; the margin is a few cell diameters, so a kept cell lies well
inside its region, where flows and borders are as the whole image would have them.

Memory is then the label image (4 bytes per pixel) plus one region's pipeline, whatever the
image's size; the margins cost (core + 2 margin)^2 / core^2 of extra work (~1.2x for 2048-px
cores and 100-px margins).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def segment_in_regions(
    segment: Callable[[np.ndarray], np.ndarray], image: np.ndarray, core: int, margin: int
) -> np.ndarray:
    """Instance labels (H, W) of a (C, H, W) image, ``segment`` called on each core (at most
    ``core`` px a side, split evenly) with ``margin`` px of context around it (clipped at the
    image's edges).

    Label ids are consecutive in the order the regions are visited (rows, then columns). A
    pixel claimed by a cell of an earlier region keeps it (two regions can draw one border
    pixel differently)."""
    if core < 1 or margin < 0:
        raise ValueError(f"core must be >= 1 and margin >= 0, got {core} and {margin}")
    height, width = image.shape[-2:]
    step_y, step_x = _even_step(height, core), _even_step(width, core)
    out = np.zeros((height, width), np.int32)
    next_id = 1
    for top in range(0, height, step_y):
        for left in range(0, width, step_x):
            bottom, right = min(top + step_y, height), min(left + step_x, width)
            y0, x0 = max(0, top - margin), max(0, left - margin)
            y1, x1 = min(height, bottom + margin), min(width, right + margin)
            labels = segment(image[:, y0:y1, x0:x1]).astype(np.int64, copy=False)
            keep = _centred_in(labels, (top - y0, bottom - y0), (left - x0, right - x0))
            dst = out[y0:y1, x0:x1]
            taken = keep[labels] & (dst == 0)
            present = np.bincount(labels[taken], minlength=len(keep)) > 0
            ids = np.zeros(len(keep), np.int32)
            found = np.flatnonzero(present)
            ids[found] = np.arange(next_id, next_id + len(found), dtype=np.int32)
            next_id += len(found)
            dst[taken] = ids[labels[taken]]
    return out


def _even_step(size: int, core: int) -> int:
    """The core side along an axis of ``size`` px: as few cores as sides of at most ``core`` px
    allow, of (nearly) equal size, so no region is a thin sliver at the image's edge."""
    return math.ceil(size / math.ceil(size / core))


def _centred_in(labels: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Per label id, whether the cell's centroid lies in ``rows`` x ``cols`` (half-open, in
    the region's coordinates); False for the background and for ids without pixels."""
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 1
    counts = np.bincount(flat, minlength=n)
    row_of = np.repeat(np.arange(labels.shape[0], dtype=np.float64), labels.shape[1])
    col_of = np.tile(np.arange(labels.shape[1], dtype=np.float64), labels.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=row_of, minlength=n) / counts
        cx = np.bincount(flat, weights=col_of, minlength=n) / counts
    keep = (counts > 0) & (cy >= rows[0]) & (cy < rows[1]) & (cx >= cols[0]) & (cx < cols[1])
    keep[0] = False
    return keep
