"""Turn the segmenter's class probabilities into an instance label image.

The segmenter Seg of cGAN-Seg (Zargari et al., iScience 2024) outputs per-pixel classes; the
paper scores *instances* (per-cell IoU matching, F-score over IoU thresholds), so predictions
must be split into cells:

- **2 classes** (background, cell): foreground is ``argmax == 1`` (``p(cell) > 0.5``), holes
  smaller than ``min_size`` are filled, objects smaller than ``min_size`` are dropped, and the
  remaining connected components are the cells. Touching cells merge into one object; that is
  the known limitation of the 2-class output.
- **3 classes** (background, interior, boundary), ``boundary_mode="watershed"`` (default):
  connected components of the interior class are seeds (seeds smaller than ``min_size // 4``
  are noise and dropped, because a cell of ``min_size`` pixels has an interior core of roughly
  a quarter of its area once its one-pixel boundary ring is removed). A seeded watershed on the
  inverted interior probability, restricted to the foreground (``argmax != 0``), grows the
  seeds until they meet, so touching cells separate along the boundary class. Foreground
  components that contain no seed (cells too small to have a predicted core) are kept as
  objects of their own. ``boundary_mode="components"`` ignores the boundary class and returns
  the connected components of the foreground, like the 2-class case.

Defaults: ``min_size=15`` pixels (about a 4x4 square) removes the few-pixel specks that noisy
probabilities leave, while staying well below the area of a cell imaged at the resolutions of
the paper's data sets (cells there span tens of pixels); ``min_size=0`` disables every size
filter. Connectivity 1 (4-neighbourhood) is used throughout because a
predicted boundary or gap one pixel thin that runs diagonally separates two regions only under
4-connectivity; with 8-connectivity neighbouring cells leak through its diagonal steps and
merge. It also matches the connectivity of the boundary class in
:func:`cganseg.data.targets.labels_to_classes`.

- **flows** (issue 16, :func:`flows_to_instances`): the output is Cellpose's (flow ``dy, dx`` at
  5x scale, cell-probability logit); pixels whose logit exceeds ``cellprob_threshold`` follow the
  flow for 200 steps and those that end at the same point form one cell; cells whose flows
  disagree with the flows recomputed from their own mask by more than ``flow_threshold`` (mean
  squared error) are dropped. The steps are cellpose 3's own (``dynamics.compute_masks`` without
  its flow check, then ``metrics.flow_error``, as its ``remove_bad_flow_masks`` does), apart so
  that threshold tuning follows the flows once per cell-probability threshold; defaults are
  Cellpose's (0.0 and 0.4); holes and small objects are then handled as above.

Output: int32 labels (H, W), 0 background, consecutive ids 1..N.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.segmentation import relabel_sequential, watershed

from cganseg.data.flows import (
    CELLPROB_THRESHOLD,
    FLOW_CHANNELS,
    FLOW_THRESHOLD,
    dynamics,
    flow_metrics,
)
from cganseg.errors import InputError

BOUNDARY_MODES = ("watershed", "components")


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero out labelled objects with fewer than ``min_size`` pixels."""
    if min_size <= 0 or labels.max() == 0:
        return labels
    areas = np.bincount(labels.ravel())
    small = areas < min_size
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def _fill_small_holes(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Fill background regions enclosed by foreground with fewer than ``min_size`` pixels."""
    if min_size <= 0:
        return mask
    holes = ndi.binary_fill_holes(mask) & ~mask
    small_holes = _drop_small(label(holes, connectivity=1), min_size) == 0
    return mask | (holes & small_holes)


def _components(foreground: np.ndarray, min_size: int) -> np.ndarray:
    foreground = _fill_small_holes(foreground, min_size)
    return _drop_small(label(foreground, connectivity=1), min_size)


def _watershed_instances(probs: np.ndarray, classes: np.ndarray, min_size: int) -> np.ndarray:
    foreground = classes != 0
    seeds = _drop_small(label(classes == 1, connectivity=1), min_size // 4)
    grown = watershed(-probs[1], markers=seeds, mask=foreground, connectivity=1)
    unseeded = label(foreground & (grown == 0), connectivity=1)
    unseeded[unseeded > 0] += grown.max()
    return _drop_small(np.where(grown > 0, grown, unseeded), min_size)


def _numbered(labels: np.ndarray) -> np.ndarray:
    relabelled, _, _ = relabel_sequential(labels.astype(np.int32, copy=False))
    return relabelled.astype(np.int32, copy=False)


def follow_flows(output: np.ndarray, cellprob_threshold: float = CELLPROB_THRESHOLD) -> np.ndarray:
    """Cellpose's cells before any quality control: the pixels whose cell-probability logit
    exceeds ``cellprob_threshold`` follow the flow of ``output`` (3, H, W), and those that end
    at the same point form one cell (``cellpose.dynamics.compute_masks`` without its flow check,
    which :func:`flow_errors` and :func:`drop_bad_flows` do apart so that a threshold search
    follows the flows once). Labels (H, W) int32, not yet tidied."""
    output = np.asarray(output, dtype=np.float32)
    if output.ndim != 3 or output.shape[0] != FLOW_CHANNELS:
        raise InputError(f"a flow output must have shape (3, H, W), got {output.shape}")
    with warnings.catch_warnings():  # torch's note on sparse tensors, once per process
        warnings.filterwarnings("ignore", "Sparse invariant checks", UserWarning)
        masks = dynamics().compute_masks(
            output[:2], output[2], cellprob_threshold=cellprob_threshold, flow_threshold=0.0,
            min_size=-1,  # ours in tidy_flow_cells, as for the class modes
        )  # fmt: skip
    return np.asarray(masks, dtype=np.int32)


def flow_errors(cells: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per cell id 1..max, the mean squared difference between the predicted flow and the flow
    recomputed from the cell's own mask (``cellpose.metrics.flow_error``, what Cellpose's
    ``flow_threshold`` compares)."""
    if cells.max() == 0:
        return np.zeros(0)
    flows = np.asarray(output[:2], np.float32)
    errors, _ = flow_metrics().flow_error(cells, flows, torch.device("cpu"))
    return np.asarray(errors)


def drop_bad_flows(cells: np.ndarray, errors: np.ndarray, flow_threshold: float) -> np.ndarray:
    """``cells`` without those whose flow error exceeds ``flow_threshold`` (0: keep all), as
    ``cellpose.dynamics.remove_bad_flow_masks``."""
    if flow_threshold <= 0 or errors.size == 0:
        return cells
    bad = np.concatenate([[False], errors > flow_threshold])
    return np.where(bad[cells], 0, cells)


def tidy_flow_cells(cells: np.ndarray, min_size: int = 15) -> np.ndarray:
    """Each cell's own small holes filled, small cells dropped, ids made consecutive."""
    filled = np.zeros_like(cells)
    for region, box in enumerate(ndi.find_objects(cells), start=1):
        if box is not None:
            cell = _fill_small_holes(cells[box] == region, min_size)
            filled[box][cell & (filled[box] == 0)] = region
    return _numbered(_drop_small(filled, min_size))


def flows_to_instances(
    output: np.ndarray,
    *,
    cellprob_threshold: float = CELLPROB_THRESHOLD,
    flow_threshold: float = FLOW_THRESHOLD,
    min_size: int = 15,
) -> np.ndarray:
    """Instance labels (H, W) int32, consecutive 1..N, from a flow output (3, H, W)."""
    cells = follow_flows(output, cellprob_threshold)
    if flow_threshold > 0:
        cells = drop_bad_flows(cells, flow_errors(cells, output), flow_threshold)
    return tidy_flow_cells(cells, min_size)


def probabilities_to_instances(
    probs: np.ndarray, *, min_size: int = 15, boundary_mode: str = "watershed"
) -> np.ndarray:
    """Instance labels (H, W) int32, consecutive 1..N, from probabilities (n_classes, H, W)."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] not in (2, 3):
        raise InputError(f"probabilities must have shape (2 or 3, H, W), got {probs.shape}")
    if boundary_mode not in BOUNDARY_MODES:
        raise InputError(f"boundary_mode must be one of {BOUNDARY_MODES}, got {boundary_mode!r}")
    classes = np.argmax(probs, axis=0)
    if probs.shape[0] == 3 and boundary_mode == "watershed":
        labels = _watershed_instances(probs, classes, min_size)
    else:
        labels = _components(classes != 0, min_size)
    return _numbered(labels)
