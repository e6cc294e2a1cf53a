"""A run's settings, resolved in one place (issue 28, item 3).

Precedence: defaults < ``--preset`` < ``--config`` file < command line, for a new run; a resumed
run takes the settings saved in its ``last.pt`` (or, stopped during a ``train`` run's
pre-training, its ``config.yaml``), re-rooted at the folder it is resumed in, and takes from the
command line (and config file) only the options whose spec says ``resumable``. A new run's
settings are made concrete before anything is written: paths absolute (config.yaml then works
from anywhere), the backbone's width and the device as resolved, so config.yaml says what was
used. A run that starts from a trained segmenter (``init_seg``: a shipped model, run folder or
checkpoint) takes that network's architecture, channels, instance mode and cell diameter
(:func:`with_start`); an option given otherwise is refused in one line, since the weights would
not fit or would mean something else. ``train-seg``, ``train``, the pre-training,
``experiment`` and the value/peers benchmarks all come through :func:`resolve`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from cganseg.checkpoint import SEGMENTER, load_checkpoint, resolve_checkpoint
from cganseg.errors import InputError
from cganseg.instances import mode
from cganseg.instances.postprocessing import PostProcessing
from cganseg.models.registry import DEFAULT_WIDTHS
from cganseg.options import SegTrainConfig, read_yaml_mapping
from cganseg.optionspec import names, spec_of
from cganseg.runtime.device import resolve_device

ConfigT = TypeVar("ConfigT", bound=SegTrainConfig)


def resolve(
    cls: type[ConfigT],
    cli: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    *,
    saved: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    new_run: bool = True,
    source: str | Path | None = None,
) -> ConfigT:
    """The settings of a run of config class ``cls``: ``cli`` (the options the command line or
    the caller gave) over ``config_file``'s over the preset's over the defaults; or, when
    ``saved`` (the config of a run being resumed in ``run_dir``) is given, those settings with
    only the resumable options taken from ``cli`` and the file. ``new_run``: the run folder and
    the data must be named (a resumed run has its own). ``source`` names where ``cli`` came
    from in errors, where no config file does."""
    source = config_file or source
    given = {**(read_yaml_mapping(config_file) if config_file else {}), **(cli or {})}
    if saved is not None and run_dir is not None:
        return _resumed(cls, saved, Path(run_dir), given)
    if not given.get("out"):
        raise InputError("--out RUN_DIR is required (option out)", source)
    if new_run and not given.get("data"):
        raise InputError("--data DIR is required (option data)", source)
    if saved is not None:
        return _resumed(cls, saved, Path(given["out"]), given)
    if given.get("init_seg"):
        given = with_start(given, source)
    return cls.from_dict(given, source)


def with_start(given: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """``given`` with the settings its start model (``init_seg``) fixes, and ``init_seg`` a
    shipped model's name or an absolute path; a given setting that differs is refused."""
    start = str(given["init_seg"])
    path = resolve_checkpoint(start, SEGMENTER)
    payload = load_checkpoint(path)
    net = payload.get(f"{SEGMENTER}_config")
    if not isinstance(net, dict) or not {"name", "width", "n_classes"} <= set(net):
        raise InputError("holds no segmenter to start from", path)
    post = PostProcessing.from_checkpoint(payload, int(net["n_classes"]), path)
    fixed: dict[str, Any] = {"model": net["name"], "width": net["width"],
                             "channels": payload.get("channels"), "instances": post.instances,
                             "cell_diameter": post.cell_diameter}  # fmt: skip
    if mode(post.instances).output_kind == "classes":  # else the output size says nothing
        fixed["n_classes"] = net["n_classes"]
    for key, value in fixed.items():
        if given.get(key) is not None and given[key] != value:
            raise InputError(
                f"option {key} is {given[key]}, but the start model {start} has {value}: leave "
                "it out (a fine-tuned network keeps its start's)",
                source,
            )
    on_disk = Path(start).exists()  # else a shipped model, kept by name
    return {**given, **fixed, "init_seg": _absolute(start) if on_disk else start}


def resumable_options(cls: type[SegTrainConfig]) -> tuple[str, ...]:
    """The options of ``cls`` that may change when a run is resumed (their spec says
    ``resumable``); all others must match the saved config."""
    return names(cls, lambda spec: spec.resumable)


def started(cfg: ConfigT) -> ConfigT:
    """``cfg`` made concrete for a new run: paths absolute; the backbone's width and the device
    as resolved."""
    width = DEFAULT_WIDTHS[cfg.model] if cfg.width is None else cfg.width
    return dataclasses.replace(with_absolute_paths(cfg), width=width,
                               device=str(resolve_device(cfg.device)))  # fmt: skip


def with_absolute_paths(cfg: ConfigT) -> ConfigT:
    """``cfg`` with its file and folder options (their spec says ``path``) absolute."""
    paths = {f.name: _absolute(getattr(cfg, f.name))
             for f in dataclasses.fields(cfg) if spec_of(f).path}  # fmt: skip
    return dataclasses.replace(cfg, **paths)


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def _resumed(cls: type[ConfigT], saved: dict[str, Any], run_dir: Path,
             given: dict[str, Any]) -> ConfigT:  # fmt: skip
    """The saved config, re-rooted: the run is the folder it was given (a copied run resumes in
    its copy), ``--data`` replaces a data folder that moved; then the given resumable options."""
    cfg = cls.from_dict(saved)
    cfg.out = _absolute(str(run_dir))
    if given.get("data"):
        cfg.data = _absolute(given["data"])
    elif not Path(cfg.data).is_dir():
        raise InputError(
            "data folder not found (moved or renamed?); resume with --data NEW_PLACE, which is "
            "checked file by file against the run's data",
            cfg.data,
        )
    merged = cfg.to_dict()
    allowed = resumable_options(cls)
    for key, value in given.items():
        if value is None or key in ("data", "out") or merged.get(key) == value:
            continue
        if key not in allowed:
            raise InputError(
                f"--{key.replace('_', '-')} {value} differs from the run's {merged.get(key)}; "
                f"only {', '.join(allowed)} may change on resume"
            )
        merged[key] = value
    return cls.from_dict(merged)
