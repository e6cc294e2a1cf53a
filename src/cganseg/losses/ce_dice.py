"""Cross-entropy + Dice loss for the segmenter (the paper's CE + Dice terms, Eq. 12-15).

Cross-entropy trains every pixel; the soft Dice term, computed on softmax probabilities of the
foreground classes, counters the imbalance between a few cell pixels and much background. The Dice
part takes probabilities, so the cGAN-Seg cycle can reuse it on a segmenter output it has already
turned into probabilities.

The Dice sums run over the whole batch; in data-parallel training ``reduce`` sums them over all
processes, so the loss is the Dice of the global batch, as in a single process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cganseg.data.targets import one_hot

Reduce = Callable[[torch.Tensor], torch.Tensor]


def soft_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0, reduce: Reduce | None = None
) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (1..K-1), summed over the batch's pixels.

    ``probs``: (B, K, H, W) class probabilities; ``target``: (B, H, W) int64 classes;
    ``reduce``: sums the per-class sums over processes (None: this batch alone).
    """
    onehot = one_hot(target, probs.shape[1], probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    if reduce is not None:
        inter, denom = reduce(torch.stack([inter, denom]))
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[1:].mean()


class CEDiceLoss(nn.Module):
    """``ce_weight * CE(logits, target) + dice_weight * (1 - Dice(softmax(logits), target))``."""

    def __init__(
        self, ce_weight: float = 1.0, dice_weight: float = 1.0, reduce: Reduce | None = None
    ) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight, self.reduce = ce_weight, dice_weight, reduce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, target)
        dice = soft_dice_loss(logits.softmax(dim=1), target, reduce=self.reduce)
        return self.ce_weight * ce + self.dice_weight * dice
