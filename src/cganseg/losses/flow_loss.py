"""Cellpose's loss for the flow output (issue 16, ``--instances flows``).

As Cellpose trains (cellpose 3, ``train._loss_fn_seg``): the two flow channels regress 5x the unit
flow vectors with mean squared error, halved, and the cell-probability channel is a logit trained
with binary cross-entropy against the cell indicator. The factor 5 puts the flows on the scale of
the logits; inference divides it out again (``cellpose.dynamics.compute_masks``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: flows are regressed at this scale (Cellpose's convention)
FLOW_SCALE = 5.0


class FlowLoss(nn.Module):
    """``MSE(out[:, :2], 5 * flows) / 2 + BCE(out[:, 2], cell)``; output, target (B, 3, H, W)."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output, target = output.float(), target.float()
        flow = F.mse_loss(output[:, :2], FLOW_SCALE * target[:, :2]) / 2.0
        cell = F.binary_cross_entropy_with_logits(output[:, 2], target[:, 2])
        return flow + cell
