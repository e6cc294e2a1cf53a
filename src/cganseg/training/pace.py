"""How long a run will take: estimated from the networks before any step (issue 33: the start
line says what a run will cost), then measured once after its first steps (issue 18: a user on
a CPU should learn within a minute that the settings mean hours, not after them)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from cganseg.instances import mode
from cganseg.models.registry import build_segmenter

#: CPU-seconds that one step costs per GFLOP of its segmenter's forward pass over one batch of
#: crops, on the 2-core x86 machine of the README's measurements. ``train-seg``: between the
#: learning curve's trained runs (benchmarks/results/fewshot.json; UNet width 16, flows,
#: 128 px crops, batch 8 = 12.1 GFLOP: median 0.87 CPU-s per step with start validation and
#: data workers, 0.072 per GFLOP) and ``make demo``'s conventional run (demo_time.json: 96 px,
#: batch 8, validation every 50 steps: 0.095). ``train`` (a cGAN-Seg step without its extra Seg
#: updates, which cost train-seg steps: generator, discriminators and perceptual network):
#: between ``make demo``'s cGAN-Seg run (96 px, batch 4, 3 extra updates: 2.06 CPU-s per step
#: with validation, 0.37) and a bare ``cganseg train`` (bare_train_time.json: 2700 pre-training
#: steps and 300 cGAN-Seg steps at 128 px, batch 4: 35.3 CPU-minutes in all, 0.21 once the
#: pre-training's share is taken at 0.08). Scaling by the segmenter's FLOPs carries crop,
#: batch, width and backbone over to other settings; levers that change the generator's share
#: of a cGAN-Seg step (perceptual depth, widths) move it further. tests/test_cpu_defaults.py
#: holds these to the three records (within 30%).
CPU_S_PER_GFLOP = {"train-seg": 0.08, "train": 0.28}

#: steps left untimed (the first ones allocate and warm caches), then steps timed
WARMUP, TIMED = 2, 10


def segmenter_gflop(cfg: Any) -> float:
    """GFLOP of one forward pass of ``cfg``'s segmenter over one batch of its crops, counted on
    the meta device (no memory, no arithmetic: a fraction of a second for any size)."""
    out = mode(str(cfg.instances)).output_channels(cfg.n_classes)
    with torch.device("meta"):
        net = build_segmenter(cfg.model, 1, out, cfg.width)
        batch = torch.empty(cfg.batch_size, 1, *cfg.crop)
    with FlopCounterMode(display=False) as counter:
        net(batch)
    return counter.get_total_flops() / 1e9


def estimate_cpu_s(kind: str, cfg: Any, steps: int) -> float:
    """CPU-seconds that ``steps`` steps of trainer ``kind`` (``train-seg``, ``train``) with
    ``cfg`` should cost on a CPU like the README's; a cGAN-Seg step's extra Seg updates
    (``seg_extra_updates``) cost what conventional steps cost."""
    gflop = segmenter_gflop(cfg)
    extra = getattr(cfg, "seg_extra_updates", 0) if kind == "train" else 0
    return steps * gflop * (CPU_S_PER_GFLOP[kind] + extra * CPU_S_PER_GFLOP["train-seg"])


def cpu_minutes(seconds: float) -> str:
    """``~12 CPU-minutes`` (at least 1)."""
    n = max(1, round(seconds / 60))
    return f"~{n} CPU-minute{'s' if n != 1 else ''}"


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
