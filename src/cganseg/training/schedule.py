"""Schedules: the learning rate's, and the ramp of cGAN-Seg's synthetic-cycle weights.

Learning rate: short linear warm-up, then cosine decay to 1% (or constant). Warm-up keeps the
first Adam steps of a freshly initialised network from overshooting; cosine decay lets an
iteration-budgeted run end on small steps without a hand-tuned step schedule.

Cycle weights (issue 17): early generated images are poor, so at Eq. 16's weights the cycle
terms act as label noise on the segmenter from step 0; :func:`cycle_factor` keeps them and the
adversarial terms off for a warm-up and then raises them linearly to their weights.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from cganseg.errors import InputError

SCHEDULES = ("cosine", "constant")


def lr_factor(step: int, total: int, warmup_fraction: float, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``."""
    warmup = int(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(
    optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float, schedule: str
) -> LambdaLR:
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r} (use {', '.join(SCHEDULES)})")
    return LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup_fraction, schedule))


def cycle_factor(step: int, warmup: int, ramp: int) -> float:
    """Multiplier of the Rec_S, Rec_G, D1_G and D2_S weights at ``step`` (0-based): 0 for the
    first ``warmup`` steps, then rising linearly to 1 over ``ramp`` steps (0: at once)."""
    if step < warmup:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - warmup + 1) / ramp)
