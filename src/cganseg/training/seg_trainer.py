"""Conventional training of a segmenter (the paper's baseline, scenarios B and C).

Random crops with conventional augmentation -> segmenter -> CE + Dice -> Adam with warm-up +
cosine schedule. Validation, checkpoints, early stopping, resume and the test evaluation come
from the shared loop (:mod:`cganseg.training.loop`).

A run folder holds ``config.yaml``, ``split.json``, ``metrics.csv``, ``tensorboard/``, ``best.pt``,
``last.pt`` and, when the split has a test set, ``test/`` with the evaluation of ``best.pt``.
"""

from __future__ import annotations

from typing import Any

import torch

from cganseg.options import SegTrainConfig
from cganseg.training.loop import TrainerBase
from cganseg.training.run import run_training
from cganseg.training.schedule import make_scheduler


class SegTrainer(TrainerBase):
    """Conventional training: one segmenter, CE + Dice."""

    kind = "train-seg"
    loss_columns = ("loss",)

    def build(self) -> None:
        cfg = self.cfg
        self.model = self.new_segmenter()
        if cfg.init_seg and not self.resuming:  # (a resumed run has its own weights)
            self.start_segmenter(self.model, cfg.init_seg)
        self.net = self.passes.wrap(self.model)
        self.optimizer = self.passes.adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.scheduler = make_scheduler(
            self.optimizer, cfg.iterations, cfg.warmup_fraction, cfg.schedule
        )
        self.scaler = self.passes.grad_scaler()
        self.loss_fn = self.segmentation_loss()

    @property
    def segmenter(self) -> torch.nn.Module:
        return self.model

    def state_objects(self) -> dict[str, Any]:
        return {
            "model_state": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }

    def current_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def lr_schedulers(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        return [self.scheduler]

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.train()
        images, targets = self.passes.to_device(images), self.passes.to_device(targets)
        with self.passes.autocast():
            loss = self.loss_fn(self.net(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss.detach()}


def train_segmenter(
    cfg: SegTrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) conventional training; returns a summary dict."""
    return run_training(SegTrainer, cfg, resume=resume, progress=progress, given=given)
