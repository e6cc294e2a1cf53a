"""When training has diverged: NaN/inf in a loss or a weight, or a loss that exploded.

A run that diverged must not go on writing checkpoints: the guard raises
:class:`~cganseg.errors.TrainingDiverged` with the reason and what was kept (``last.pt``, the
last good state, when there is one). The trainer then stops, or rolls back to ``last.pt`` with
lower learning rates (``on_divergence: rollback``, :class:`~cganseg.training.stopping.Rollbacks`).
An exploding loss is one above ``max_loss``, or, without it, :data:`MAX_LOSS_FACTOR` times the
first step's loss (the reference is saved in ``last.pt``, so a resumed run judges alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from cganseg.errors import TrainingDiverged

#: without ``max_loss``, a loss this many times the first step's loss counts as divergence
MAX_LOSS_FACTOR = 1e4
#: floor of the first step's loss in that rule, so that a run starting near 0 is not stopped
MIN_LOSS_REFERENCE = 1e-2


class DivergenceGuard:
    """Checks of one run (its folder ``run_dir`` and ``max_loss`` option); ``reference``: the
    first step's loss, once known."""

    def __init__(self, run_dir: Path, max_loss: float | None) -> None:
        self.run_dir, self.max_loss_option = Path(run_dir), max_loss
        self.reference: float | None = None

    def diverged(self, reason: str) -> TrainingDiverged:
        """The error for ``reason``, saying what was kept and what to try."""
        last = self.run_dir / "last.pt"
        if not last.is_file():
            return TrainingDiverged(
                reason,
                "training stopped; no checkpoint was saved yet, so start again with a lower "
                "learning rate (--lr) or without mixed precision (--no-amp)",
            )
        return TrainingDiverged(
            reason,
            f"training stopped, last good checkpoint kept in {last} (resume with "
            "--on-divergence rollback to go on at lower learning rates, or try --no-amp)",
        )

    def max_loss(self) -> float:
        """The loss above which training counts as diverged."""
        if self.max_loss_option is not None:
            return self.max_loss_option
        return MAX_LOSS_FACTOR * max(self.reference or 0.0, MIN_LOSS_REFERENCE)

    def check_losses(self, values: Mapping[str, float], step: int) -> None:
        """Raise when a logged loss term is NaN/inf or the total exploded."""
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            name, value = next(iter(bad.items()))
            raise self.diverged(f"{name} became {value} by step {step}")
        limit = self.max_loss()
        if values.get("loss", 0.0) > limit:
            raise self.diverged(
                f"loss {values['loss']:.3g} exploded past max_loss {limit:.3g} by step {step}"
            )

    def check_weights(self, networks: Mapping[str, nn.Module], step: int) -> None:
        """Refuse to checkpoint non-finite weights (a loss can stay finite while they are not)."""
        for net_name, net in networks.items():
            for name, param in net.named_parameters():
                if not torch.isfinite(param).all():
                    raise self.diverged(
                        f"weights of the {net_name} ({name}) became NaN/inf by step {step}"
                    )
