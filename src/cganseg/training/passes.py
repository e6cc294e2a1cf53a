"""How a trainer's networks run their training passes on the hardware: device, mixed precision,
memory layout, data parallelism and compilation, as the run's options say.

Kept apart from the loop (:mod:`cganseg.training.loop`) so that both trainers ask one small
object for an optimiser, a wrapped network, an autocast context, a loss scaler and a batch on the
device, and the loop itself stays about training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cganseg.options import SegTrainConfig
from cganseg.runtime import distributed


class TrainingPasses:
    """The hardware side of one run's training steps (``cfg`` on ``device``)."""

    def __init__(self, cfg: SegTrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.amp = cfg.amp and device.type == "cuda"  # mixed precision on CUDA only
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
        self.scale_grads = self.amp and cfg.amp_dtype == "fp16"  # bf16 needs no loss scaling

    def adam(self, params, **kwargs: Any) -> torch.optim.Adam:
        """Adam, with fused kernels unless ``fused_adam`` is off."""
        return torch.optim.Adam(params, fused=self.cfg.fused_adam, **kwargs)

    def wrap(self, net: nn.Module) -> nn.Module:
        """What a training step calls for ``net``: laid out, DDP-wrapped, compiled as configured.

        ``net`` itself (what checkpoints and validation use) keeps sharing the parameters.
        """
        if self.cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        wrapped = distributed.data_parallel(net, self.device)
        return torch.compile(wrapped) if self.cfg.compile else wrapped

    def autocast(self) -> torch.autocast:
        """Mixed precision for a training pass (CUDA only, ``amp_dtype``)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 autocast; disabled (a pass-through) otherwise."""
        return torch.amp.GradScaler("cuda", enabled=self.scale_grads)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the training device, in the configured memory layout."""
        batch = batch.to(self.device, non_blocking=True)
        if self.cfg.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
