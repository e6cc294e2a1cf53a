"""``flows`` (issue 16): Cellpose's flows and cell probability; cells are where flows converge.

The output is Cellpose's (flow ``dy, dx`` at 5x scale, cell-probability logit, see
:mod:`cganseg.data.flows`); pixels whose logit exceeds ``cellprob_threshold`` follow the flow for
200 steps and those that end at the same point form one cell; cells whose flows disagree with
the flows recomputed from their own mask by more than ``flow_threshold`` (mean squared error)
are dropped. The steps are cellpose 3's own (``dynamics.compute_masks`` without its flow check,
then ``metrics.flow_error``, as its ``remove_bad_flow_masks`` does), apart so that threshold
tuning follows the flows once per cell-probability threshold; defaults are Cellpose's (0.0 and
0.4); holes and small objects are then handled as in the class modes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from cganseg.data.flows import (
    CELLPROB_THRESHOLD,
    FLOW_CHANNELS,
    FLOW_THRESHOLD,
    dynamics,
    flow_metrics,
    labels_to_flows,
)
from cganseg.data.targets import one_hot
from cganseg.errors import InputError
from cganseg.instances.base import InstanceMode, Reduce
from cganseg.instances.cleanup import drop_small, fill_small_holes, numbered
from cganseg.losses.flow_loss import FlowLoss


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
            cell = fill_small_holes(cells[box] == region, min_size)
            filled[box][cell & (filled[box] == 0)] = region
    return numbered(drop_small(filled, min_size))


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


class Flows(InstanceMode):
    """Flows + cell probability, Cellpose's loss, cells by following the flows."""

    name = "flows"
    summary = "Cellpose flows + cell probability"
    output_kind = "flows"
    output_tensor = "flows"
    output_summary = "flows (dy, dx) and cell probability"
    output_tag = "flows"
    #: Cellpose's defaults first, so a tie keeps them; 0 drops no cell for its flows
    threshold_grid = {
        "cellprob_threshold": (CELLPROB_THRESHOLD, -1.0, 1.0, -2.0),
        "flow_threshold": (FLOW_THRESHOLD, 0.2, 0.6, 0.0),
    }
    image_target_vector = (0, 1)  # dy, dx: made once per image, as Cellpose's training does

    def output_channels(self, n_classes: int) -> int:
        return FLOW_CHANNELS

    def targets(self, labels: np.ndarray, n_classes: int) -> torch.Tensor:
        return torch.from_numpy(labels_to_flows(labels))

    def loss(self, reduce: Reduce = None) -> nn.Module:
        return FlowLoss()

    def blend(self, raw: torch.Tensor) -> torch.Tensor:
        return raw  # flows and logits blend linearly across tiles as they are

    def cell_probability(self, output: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-output[2]))  # the cell logit's sigmoid

    def foreground(self, output: np.ndarray, **thresholds: float) -> np.ndarray:
        return output[2] > thresholds.get("cellprob_threshold", CELLPROB_THRESHOLD)

    def output_names(self, n_classes: int) -> list[str]:
        return ["flow_y", "flow_x", "cell_probability"]

    def describe_output(self, n_classes: int) -> str:
        return ("`flows`: (batch, channel, y, x) with channels flow_y, flow_x (Cellpose-style "
                "flows, the gradient of a diffusion from each cell's centre) and "
                "cell_probability (sigmoid of the network's logit).")  # fmt: skip

    def to_labels(self, output: np.ndarray, min_size: int, **thresholds: float) -> np.ndarray:
        return flows_to_instances(output, min_size=min_size, **thresholds)

    def threshold_search(
        self, output: np.ndarray, min_size: int
    ) -> Iterator[tuple[dict[str, float], np.ndarray]]:
        for cellprob in self.threshold_grid["cellprob_threshold"]:  # the costly part: once
            cells = follow_flows(output, cellprob)
            errors = flow_errors(cells, output)
            for flow in self.threshold_grid["flow_threshold"]:
                point = {"cellprob_threshold": cellprob, "flow_threshold": flow}
                yield point, tidy_flow_cells(drop_bad_flows(cells, errors, flow), min_size)

    def class_probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        cell = raw[:, 2:3].float().sigmoid()  # background / cell from the logit
        return torch.cat([1.0 - cell, cell], dim=1)

    def mask_classes(self, n_classes: int) -> int:
        return 2

    def target_mask(self, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
        return one_hot((targets[:, 2] > 0.5).long(), 2, targets.dtype)

    def describe(self, min_size: int, **thresholds: float) -> str:
        cellprob = thresholds.get("cellprob_threshold", CELLPROB_THRESHOLD)
        flow = thresholds.get("flow_threshold", FLOW_THRESHOLD)
        return ("follow the flows of pixels whose cell probability exceeds "
                f"sigmoid({cellprob:.3f}) and keep cells with mean squared flow error <= "
                f"{flow:.3f} (Cellpose 3's `dynamics.compute_masks`), then drop cells smaller "
                f"than {min_size} px.")  # fmt: skip

    def prepare(self) -> None:
        dynamics()  # imported (numba-compiled) once here, not again in every loader worker
