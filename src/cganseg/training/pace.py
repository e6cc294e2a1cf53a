"""How long a run will take, said once after its first steps (issue 18: a user on a CPU should
learn within a minute that the defaults mean hours, not after them)."""

from __future__ import annotations

import time

from tqdm.auto import tqdm

#: steps left untimed (the first ones allocate and warm caches), then steps timed
WARMUP, TIMED = 2, 10


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Pace:
    """Times steps ``start + WARMUP`` to ``start + WARMUP + TIMED`` of a run of ``total`` steps
    and then writes one line: seconds per step and the time the remaining steps need."""

    def __init__(self, start: int, total: int) -> None:
        self.start, self.total = start, total
        self.began: float | None = None
        self.said = False

    def tick(self, step: int) -> None:
        """Call after each step; ``step``: steps done so far."""
        if self.said:
            return
        if step == self.start + WARMUP:
            self.began = time.perf_counter()
        elif self.began is not None and step == self.start + WARMUP + TIMED:
            per_step = (time.perf_counter() - self.began) / TIMED
            left = self.total - step
            tqdm.write(f"~{per_step:.2f} s per step: about {duration(per_step * left)} for the "
                       f"remaining {left} steps (validation not included)")  # fmt: skip
            self.said = True
