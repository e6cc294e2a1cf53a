"""Starting and resuming a training run: the folder, its lock, its settings and its data.

:func:`run_training` is what ``train-seg`` and ``train`` call: it checks the run folder can be
written, takes its lock (one writer per folder), makes the settings absolute (config.yaml then
works from anywhere) or, on ``--resume``, takes them from ``last.pt`` (only
:data:`RESUMABLE_OVERRIDES` may change), reads the data split, saves config.yaml and split.json,
and hands over to the trainer's loop (:mod:`cganseg.training.loop`) with SIGINT/SIGTERM caught.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from cganseg.checkpoint import load_checkpoint
from cganseg.data.splits import save_split
from cganseg.errors import InputError
from cganseg.models.registry import DEFAULT_WIDTHS
from cganseg.options import PATH_OPTIONS, SegTrainConfig
from cganseg.runtime import distributed
from cganseg.runtime.atomic import check_writable
from cganseg.runtime.device import resolve_device
from cganseg.runtime.interrupt import graceful_stop
from cganseg.runtime.lock import folder_lock
from cganseg.training.loop import TrainerBase
from cganseg.training.run_data import load_data_split, load_extra

ConfigT = TypeVar("ConfigT", bound=SegTrainConfig)
#: options that may change when a run is resumed; all others must match the saved config
RESUMABLE_OVERRIDES = (
    "iterations",
    "device",
    "num_workers",
    "val_every",
    "patience",
    "log_every",
    "sample_every",
    "fused_adam",
    "channels_last",
    "compile",
    "on_divergence",
    "max_rollbacks",
    "max_loss",
)

def merge_resume_config(saved: SegTrainConfig, given: dict[str, Any]) -> SegTrainConfig:
    """The saved config, with only the options that may change on resume taken from ``given``."""
    merged = saved.to_dict()
    for key, value in given.items():
        if value is None or key in ("data", "out") or merged.get(key) == value:
            continue
        if key not in RESUMABLE_OVERRIDES:
            raise InputError(
                f"--{key.replace('_', '-')} {value} differs from the run's {merged.get(key)}; "
                f"only {', '.join(RESUMABLE_OVERRIDES)} may change on resume"
            )
        merged[key] = value
    return type(saved).from_dict(merged)


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
    :data:`RESUMABLE_OVERRIDES` may differ from the saved config.
    """
    cfg.check()
    run_dir = Path(cfg.out)
    main = distributed.from_env().main
    if main:
        check_writable(run_dir)
    lock = folder_lock(run_dir, trainer_cls.kind) if main else contextlib.nullcontext()
    with lock:
        return _run_locked(trainer_cls, cfg, run_dir, resume, progress, given or {})


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def with_absolute_paths(cfg: ConfigT) -> ConfigT:
    """``cfg`` with its file and folder options absolute: the run stays usable from any
    working directory."""
    paths = {f.name: _absolute(getattr(cfg, f.name))
             for f in dataclasses.fields(cfg) if f.name in PATH_OPTIONS}  # fmt: skip
    return dataclasses.replace(cfg, **paths)


def resumed_config(
    cfg_cls: type[SegTrainConfig], state: dict[str, Any], run_dir: Path, given: dict[str, Any]
) -> SegTrainConfig:
    """The saved config of a run being resumed, re-rooted: the run is the folder it was given
    (a copied run resumes in its copy), and ``--data`` replaces a data folder that moved."""
    saved = cfg_cls.from_dict(state["config"])
    saved.out = _absolute(str(run_dir))
    if given.get("data"):
        saved.data = _absolute(given["data"])
    elif not Path(saved.data).is_dir():
        raise InputError(
            "data folder not found (moved or renamed?); resume with --data NEW_PLACE, which is "
            "checked file by file against the run's data",
            saved.data,
        )
    return merge_resume_config(saved, given)


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
        cfg = resumed_config(type(cfg), state, run_dir, given)
        if main:
            tqdm.write(f"resuming {run_dir} from step {state['step']}")
    elif (run_dir / "last.pt").exists():
        raise InputError(
            "already holds a training run; add --resume or choose another --out", run_dir
        )
    else:  # paths absolute; the device and the width as resolved, so config.yaml says what
        # was used
        width = DEFAULT_WIDTHS[cfg.model] if cfg.width is None else cfg.width
        device = str(resolve_device(cfg.device))
        cfg = dataclasses.replace(with_absolute_paths(cfg), width=width, device=device)
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
