"""Conventional pre-training of cGAN-Seg's segmenter inside a ``train`` run (issue 17).

Why: at CPU budgets a randomly started Seg learns from generated images that are still noise
(FID ~280 early), and the joint game degraded it (value.py: pooled F1@0.5 0.52 ± 0.29 on DSB at
900 CPU-s, conventional 0.85). Started from a conventionally trained segmenter, the same budget
gave 0.84 in every fold. ``seg_pretrain: N`` makes that start part of the run: N steps of
conventional training (what ``cganseg train-seg`` does, on this run's data, split, segmenter,
crops, batch, seed and device, with train-seg's own learning rate and schedule) in
``RUN/seg_pretrain/``, whose ``best.pt`` then starts Seg, as ``init_seg`` would.

The run's config is written to ``RUN/config.yaml`` before the pre-training, so a run stopped
during it resumes (``--resume``) with its own options; ``RUN/seg_pretrain/done.json`` (the
pre-training's summary) marks it finished, so a resumed run never trains it twice.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cganseg.errors import InputError
from cganseg.options import SEG_PRETRAIN_DIR, CGanTrainConfig, SegTrainConfig
from cganseg.runtime import distributed
from cganseg.runtime.atomic import check_writable, write_text
from cganseg.training.seg_trainer import train_segmenter
from cganseg.training.settings import resolve, resumable_options, with_absolute_paths

#: options the pre-training takes from train-seg's defaults rather than from the cGAN-Seg run:
#: the conventional recipe (cGAN-Seg's Adam settings suit the joint game, not this)
CONVENTIONAL_OWN = ("lr", "weight_decay", "warmup_fraction", "schedule")
DONE = "done.json"


def resumable(run: str | Path) -> bool:
    """Whether folder ``run`` holds a training run to resume: its ``last.pt``, or the one of a
    ``train`` run's pre-training (stopped before the joint game began)."""
    run = Path(run)
    return (run / "last.pt").is_file() or (run / SEG_PRETRAIN_DIR / "last.pt").is_file()


def pretrain_config(cfg: CGanTrainConfig) -> SegTrainConfig:
    """The conventional run that pre-trains ``cfg``'s segmenter."""
    shared = {f.name for f in dataclasses.fields(SegTrainConfig)} - set(CONVENTIONAL_OWN)
    values = {k: v for k, v in cfg.to_dict().items() if k in shared}
    values.update(out=str(Path(cfg.out) / SEG_PRETRAIN_DIR), iterations=cfg.seg_pretrain,
                  preset=None)  # fmt: skip (the sizes are cfg's, already resolved)
    return resolve(SegTrainConfig, values)


def pretrain_segmenter(cfg: CGanTrainConfig, *, resume: bool, progress: bool,
                       given: dict[str, Any]) -> CGanTrainConfig:  # fmt: skip
    """Run (or resume, or find finished) the pre-training of ``cfg``; returns the config of the
    joint game: ``cfg``, on resume the run's saved one. Both runs make the same split (the same
    data, fractions and seed; tested), so the joint game validates on the same images."""
    run = Path(cfg.out)
    planned = run / "config.yaml"
    main = distributed.from_env().main  # (under torchrun every process trains; one writes)
    if resume:
        if not planned.is_file():
            raise InputError("nothing to resume: no last.pt or config.yaml in the run folder",
                             run)  # fmt: skip
        saved = CGanTrainConfig.load(planned)
        cfg = resolve(CGanTrainConfig, given, saved=saved.to_dict(), run_dir=run)
    else:
        if (run / SEG_PRETRAIN_DIR / "last.pt").exists():  # (before its plan is overwritten)
            raise InputError("already holds a training run; add --resume or choose another --out",
                             run)  # fmt: skip
        cfg = with_absolute_paths(cfg)
        if main:
            check_writable(run)
            cfg.save(planned)
    pre = pretrain_config(cfg)
    folder = Path(pre.out)
    if not (folder / DONE).is_file():
        again = resume and (folder / "last.pt").is_file()
        own = {k: v for k, v in given.items()
               if k in resumable_options(SegTrainConfig) and k != "iterations"}  # fmt: skip
        summary = train_segmenter(pre, resume=again, progress=progress, given=own)
        if main:
            write_text(folder / DONE, json.dumps(summary, indent=2, default=float) + "\n")
    return cfg
