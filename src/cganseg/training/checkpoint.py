"""Checkpoints: plain data, written atomically, read without unpickling code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts. It is saved to a temporary
file and moved into place, so a crash leaves the previous checkpoint intact, and it is read with
``torch.load(..., weights_only=True)``, so a crafted file cannot run code when a lab shares it.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cganseg.atomic import atomic_path
from cganseg.errors import InputError

SEGMENTER_FORMAT = "cganseg.segmenter/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:  # through Python's file, so that a full disk raises OSError with its errno
            torch.save(payload, fh)
        except RuntimeError as exc:  # torch's zip writer re-raises a failed write as its own
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint as plain data; anything else is refused with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    if not zipfile.is_zipfile(path):  # e.g. a Keras .h5 or a TorchScript-less legacy file
        raise InputError(
            "not a PyTorch checkpoint (cganseg checkpoints are zip archives written by "
            "torch.save)",
            path,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes would add lines
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            "refused to load: the file holds objects other than plain data, which could run "
            f"code ({_unpickling_detail(exc)})",
            path,
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, wrong format, I/O error, ...
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(
            f"not a readable checkpoint ({type(exc).__name__}: {first})", path
        ) from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise InputError("not a cganseg checkpoint (no 'format' entry)", path)
    return payload


def _unpickling_detail(exc: Exception) -> str:
    """The line of torch's refusal that names the offending object.

    torch's message opens with advice to retry with ``weights_only=False``, which is exactly what
    must not be done with an untrusted file, so only the specific line is passed on.
    """
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    specific = [ln for ln in lines if not ln.startswith(boilerplate)]
    return specific[0][:200] if specific else "unsupported content"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder whose ``best.pt`` (else ``last.pt``) is used."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise InputError("run folder holds no best.pt or last.pt", path)
    if not path.exists():
        raise InputError("checkpoint not found", path)
    return path


def load_network(
    path: str | Path, what: str, builder: Callable[[dict[str, Any]], torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network ``what`` ("segmenter" or "generator") of a checkpoint or run folder.

    The checkpoint stores it as ``<prefix>_config`` + ``<prefix>_state`` (prefix ``model`` for the
    segmenter); returns the network on the CPU in eval mode and the whole payload.
    """
    prefix = "model" if what == "segmenter" else what
    ckpt_path = resolve_checkpoint(path)
    payload = load_checkpoint(ckpt_path)
    if f"{prefix}_config" not in payload or f"{prefix}_state" not in payload:
        raise InputError(f"checkpoint holds no {what}", ckpt_path)
    network = builder(payload[f"{prefix}_config"])
    try:
        network.load_state_dict(payload[f"{prefix}_state"])
    except RuntimeError as exc:
        reason = str(exc)[:200]
        raise InputError(f"{what} weights do not fit its config ({reason})", ckpt_path) from None
    return network.eval(), payload
