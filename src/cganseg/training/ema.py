"""A moving average of the segmenter's weights for cGAN-Seg (issue 17, a recipe lever).

In the joint game Seg's weights wander with the generator's mistakes from step to step; the
exponential moving average of its weights (as in Mean Teacher, Polyak averaging, and the EMA
generators of StyleGAN) smooths that out, and is what validation, ``best.pt`` and the test see.
The averaging is torch's own (:class:`torch.optim.swa_utils.AveragedModel`); this module adds
the warm-up of the decay that short CPU runs need, and takes BatchNorm's running statistics
from the trained network as they are (they come from real images only, issue 15) instead of
averaging them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: the decay's warm-up: ``min(decay, (1 + n) / (WARMUP + n))`` after ``n`` updates
WARMUP = 10


def ema_with_warmup(decay: float) -> Callable[[list, list, torch.Tensor], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: averaged <- d averaged + (1 - d) current, with
    ``d = min(decay, (1 + n) / (10 + n))``. Without the warm-up, a decay of 0.999 over a 250-step
    CPU run would leave ~78% of the average at the starting weights (TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` does the same)."""

    def average(averaged: list, current: list, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (WARMUP + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return average


@torch.no_grad()
def copy_buffers(target: nn.Module, source: nn.Module) -> None:
    """``source``'s buffers (BatchNorm's running statistics and counters) into ``target``."""
    for mine, theirs in zip(target.buffers(), source.buffers(), strict=True):
        mine.copy_(theirs)
