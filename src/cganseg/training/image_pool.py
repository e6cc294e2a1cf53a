"""History pool of generated samples for the discriminators (CycleGAN, Shrivastava et al. 2017).

With probability 0.5 a discriminator sees an older fake instead of the newest one, which damps
oscillations between generator and discriminator. Off by default (``pool_size: 0``). The pool
draws from its own seeded generator and its contents go into ``last.pt``, so resume stays exact.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """A buffer of up to ``size`` past fakes; ``size == 0`` returns the input unchanged."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.items: list[torch.Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch
        self.items = [t.to(batch.device) for t in self.items]  # restored ones come on the CPU
        out = []
        for item in batch.detach():
            if len(self.items) < self.size:
                self.items.append(item.clone())
                out.append(item)
            elif torch.rand((), generator=self.rng) < 0.5:
                j = int(torch.randint(len(self.items), (), generator=self.rng))
                out.append(self.items[j].clone())
                self.items[j] = item.clone()
            else:
                out.append(item)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"items": [t.cpu() for t in self.items], "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.items = list(state["items"])
        self.rng.set_state(state["rng"])
