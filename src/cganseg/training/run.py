"""Starting and resuming a training run: the folder, its lock, its settings and its data.

:func:`run_training` is what ``train-seg`` and ``train`` call: it checks the run folder can be
written, takes its lock (one writer per folder), makes the settings concrete or, on
``--resume``, takes them from ``last.pt`` (both by :mod:`cganseg.training.settings`), reads the
data split, saves config.yaml and split.json, and hands over to the trainer's loop
(:mod:`cganseg.training.loop`) with SIGINT/SIGTERM caught.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cganseg.checkpoint import load_checkpoint
from cganseg.data.splits import save_split
from cganseg.errors import InputError
from cganseg.options import SegTrainConfig
from cganseg.runtime import distributed
from cganseg.runtime.atomic import check_writable
from cganseg.runtime.interrupt import graceful_stop
from cganseg.runtime.lock import folder_lock
from cganseg.training.loop import TrainerBase
from cganseg.training.run_data import load_data_split, load_extra
from cganseg.training.settings import resolve, started


def run_training(
    trainer_cls: type[TrainerBase],
    cfg: SegTrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start (or resume) a run of ``trainer_cls``; returns its summary dict.

    ``given``: on resume, the options the user passed explicitly; only
    resumable options may differ from the saved config (:mod:`cganseg.training.settings`).
    """
    cfg.check()
    run_dir = Path(cfg.out)
    main = distributed.from_env().main
    if main:
        check_writable(run_dir)
    lock = folder_lock(run_dir, trainer_cls.kind) if main else contextlib.nullcontext()
    with lock:
        return _run_locked(trainer_cls, cfg, run_dir, resume, progress, given or {})


def _run_locked(
    trainer_cls: type[TrainerBase],
    cfg: SegTrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    given: dict[str, Any],
) -> dict[str, Any]:
    main = distributed.from_env().main
    state = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise InputError("nothing to resume: no last.pt in the run folder", run_dir)
        state = load_checkpoint(run_dir / "last.pt")
        if state.get("kind") != trainer_cls.kind:
            raise InputError(
                f"last.pt is a {state.get('kind')} checkpoint, not {trainer_cls.kind}",
                run_dir / "last.pt",
            )
        cfg = resolve(type(cfg), given, saved=state["config"], run_dir=run_dir)
        if main:
            tqdm.write(f"resuming {run_dir} from step {state['step']}")
    elif (run_dir / "last.pt").exists():
        raise InputError(
            "already holds a training run; add --resume or choose another --out", run_dir
        )
    else:
        cfg = started(cfg)
    loading = progress and main
    data = load_data_split(
        cfg,
        state["split"] if state else None,
        loading,
        state.get("data_hashes") if state else None,
    )
    extra = load_extra(cfg, data.train[0].image.shape[0], loading)
    try:
        trainer = trainer_cls(cfg, data, extra=extra, resume_state=state, progress=progress)
        if main:  # (the run folder exists: its lock made it)
            cfg.save(run_dir / "config.yaml")
            save_split(run_dir / "split.json", trainer.data.split)
        with graceful_stop():
            return trainer.run()
    finally:
        distributed.teardown()
