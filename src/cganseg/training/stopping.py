"""When a run keeps a model, stops early, or rolls back: two small pieces of state.

Both go into ``last.pt`` (under the keys ``best_score``/``stale`` and ``rollbacks``/``lr_scale``,
as before they were objects) so that a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """Model selection on a validation score (higher is better) and stopping after ``patience``
    validations without improvement (0: never stop early)."""

    patience: int
    best: float = -math.inf
    stale: int = 0

    def update(self, score: float | None) -> bool:
        """Record a validation; True when the model is the best so far (``None``: no
        validation set, so the latest model is the one to keep)."""
        if score is None or score > self.best:
            self.best = -math.inf if score is None else score
            self.stale = 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.stale >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.stale = state["best_score"], state["stale"]


@dataclass
class Rollbacks:
    """Divergence rollbacks (``on_divergence: rollback``): each goes back to ``last.pt`` with the
    learning rates ``factor`` times lower than the time before, at most ``allowed`` times."""

    enabled: bool
    allowed: int
    factor: float
    count: int = 0
    lr_scale: float = 1.0  # of the learning rates, against the configured ones

    @property
    def available(self) -> bool:
        return self.enabled and self.count < self.allowed

    def take(self) -> float:
        """Take one more rollback (when :attr:`available`): the factor to multiply the learning
        rates restored from ``last.pt`` by."""
        self.count += 1
        ratio = self.factor**self.count / self.lr_scale
        self.lr_scale *= ratio
        return ratio

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.count, "lr_scale": self.lr_scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's state; rollbacks taken since it was saved still count."""
        self.lr_scale = state.get("lr_scale", 1.0)
        self.count = max(self.count, state.get("rollbacks", 0))
