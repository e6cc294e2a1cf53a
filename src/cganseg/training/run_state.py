"""What a run's checkpoints hold and how a run takes them up again: the payload of ``best.pt``
and ``last.pt``, the restore of a ``last.pt`` (``--resume``) and the rollback to it after a
divergence (``on_divergence: rollback``).

Kept apart from the loop (:mod:`cganseg.training.loop`) so the loop reads as the loop; the
entries themselves are the checkpoint module's (:mod:`cganseg.checkpoint`).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from cganseg.checkpoint import (
    load_checkpoint,
    restore_state,
    save_checkpoint,
    segmenter_payload,
    state_entries,
)
from cganseg.errors import TrainingDiverged
from cganseg.runtime import distributed

#: a :class:`cganseg.training.loop.TrainerBase` (not imported: the loop imports this module)
TrainerBase = Any


def payload(trainer: TrainerBase, full: bool) -> dict[str, Any]:
    """What ``best.pt`` holds (the segmenter, its settings, the trainer's extras such as the
    generator); ``full``: also every state ``last.pt`` needs to resume exactly."""
    post = trainer.cfg.postprocessing(trainer.train_diameter)
    out = segmenter_payload(trainer.segmenter, trainer.cfg.channels, post)
    out.update(kind=trainer.kind, step=trainer.step, config=trainer.cfg.to_dict())
    out.update(trainer.best_extras())
    if full:
        out.update(state_entries(trainer.state_objects()))
        out.update(trainer.early.state_dict())
        out.update(trainer.rollbacks.state_dict())
        out.update(
            torch_rng=torch.get_rng_state(),
            split=trainer.data.split,
            loss_reference=trainer.guard.reference,
            data_hashes=trainer.data.hashes,
        )
    return out


def save_last(trainer: TrainerBase) -> None:
    save_checkpoint(trainer.run_dir / "last.pt", payload(trainer, full=True))


def restore(trainer: TrainerBase, state: dict[str, Any]) -> None:
    """Take up the training state of a ``last.pt`` payload (resume and rollback)."""
    trainer.check_resumable(state)
    restore_state(trainer.state_objects(), state, trainer.run_dir / "last.pt")
    trainer.step = state["step"]
    trainer.early.load_state_dict(state)
    trainer.rollbacks.load_state_dict(state)
    trainer.guard.reference = state.get("loss_reference")
    torch.set_rng_state(state["torch_rng"])


def roll_back(trainer: TrainerBase, exc: TrainingDiverged) -> bool:
    """Go back to ``last.pt`` with the learning rates lowered, if the run allows it; False
    when it does not (the divergence then ends the run)."""
    if not trainer.rollbacks.available:
        return False
    distributed.barrier()  # rank 0's last.pt is complete before anyone reads it
    restore(trainer, load_checkpoint(trainer.run_dir / "last.pt", map_location=trainer.device))
    ratio = trainer.rollbacks.take()
    for sched in trainer.lr_schedulers():
        sched.base_lrs = [lr * ratio for lr in sched.base_lrs]
        for group in sched.optimizer.param_groups:
            group["lr"] *= ratio
    trainer.train_loader = trainer.loader()  # the data stream from the restored step
    if trainer.rank.main:
        rollbacks = trainer.rollbacks
        tqdm.write(f"{exc.reason}: rolled back to step {trainer.step}, learning rates x"
                   f"{rollbacks.lr_scale:g} (rollback {rollbacks.count} of {rollbacks.allowed})")
    return True
