"""Cellpose flow targets: every cell pixel points along the path to its cell's centre.

Issue 16. With class targets (background/interior/boundary) touching irregular cells are split by
a watershed on a thin boundary class, and one missed boundary pixel merges two cells. Cellpose
(Stringer et al., Nat. Methods 2021) predicts instead, for every pixel, the unit vector of the
gradient of a heat diffusion started at its cell's centre (``dy, dx``) and a cell probability;
pixels that follow the vectors to the same fixed point form one cell
(:func:`cganseg.instances.flows.flows_to_instances`).

The flow math is Cellpose's own: ``cellpose.dynamics.masks_to_flows`` of cellpose 3.x (the last
major version that installs beside our torch without torchvision), not a copy. It needs labels
numbered 1..N, so masks are renumbered first.

Target layout, in the segmenter's output order (Cellpose's): channel 0 ``dy``, channel 1 ``dx``
(unit vectors, 0 on the background), channel 2 the cell indicator (1 inside a cell, else 0).
"""

from __future__ import annotations

import logging
from functools import cache
from types import ModuleType

import numpy as np
from skimage.segmentation import relabel_sequential

from cganseg.errors import InputError

#: channels of a flow output/target: the flow (dy, dx), then the cell probability
FLOW_CHANNELS = 3
#: Cellpose's defaults for turning flows into cells: the cell-probability logit above which a
#: pixel is followed, and the largest mean squared flow error of a kept cell
CELLPROB_THRESHOLD, FLOW_THRESHOLD = 0.0, 0.4
@cache
def dynamics() -> ModuleType:
    """``cellpose.dynamics``, imported on first use (numba compiles its kernels at import, which
    only the flow mode should pay); one line if the installed cellpose cannot be imported."""
    try:
        from cellpose import dynamics as module
    except ImportError as exc:
        raise InputError(f"the flow mode needs cellpose 3, a dependency of cganseg ({exc}); "
                         "reinstall it: pip install 'cellpose>=3.1.1,<4'") from None  # fmt: skip
    logging.getLogger("cellpose.dynamics").setLevel(logging.ERROR)  # "empty masks!" per crop
    return module



@cache
def flow_metrics() -> ModuleType:
    """``cellpose.metrics`` (its ``flow_error``, the quality check behind ``flow_threshold``),
    imported on first use like :func:`dynamics`."""
    dynamics()  # the one place that explains a missing cellpose
    from cellpose import metrics

    return metrics

def labels_to_flows(labels: np.ndarray) -> np.ndarray:
    """Flow targets (3, H, W) float32 of an instance mask (H, W): dy, dx, cell indicator."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"label image must be 2D (H, W), got shape {labels.shape}")
    out = np.zeros((FLOW_CHANNELS, *labels.shape), np.float32)
    if labels.max() <= 0:
        return out
    numbered, _, _ = relabel_sequential(np.where(labels > 0, labels, 0).astype(np.int32))
    out[:2] = dynamics().masks_to_flows(numbered)
    out[2] = numbered > 0
    return out
