"""The checkpoint format: its one owner. Plain data, written atomically, read without unpickling.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts. It is saved to a temporary
file and moved into place, so a crash leaves the previous checkpoint intact, and it is read with
``torch.load(..., weights_only=True)``, so a crafted file cannot run code when a lab shares it.

Layout (``format`` cganseg.segmenter/1, ``version`` 4):

- every checkpoint: ``format``, ``version``, the segmenter as ``model_config`` + ``model_state``
  (:func:`segmenter_payload`), ``channels``, ``postprocessing`` (instance mode, minimum size,
  thresholds, cell diameters: :class:`~cganseg.instances.postprocessing.PostProcessing`; before
  version 4 these were entries of their own, before version 3 without ``instances``: the mode
  by the class count), ``kind`` (train-seg or train), optionally ``default_diameter`` (what
  ``segment`` uses when given no diameter; a shipped model's is ``auto``),
  ``step``, ``config``; a cGAN-Seg checkpoint also the generator, ``generator_config`` +
  ``generator_state``. ``best.pt`` holds just that; :func:`load_network` reads a network back
  (from a run folder the segmenter of ``best.pt``, the generator of ``last.pt``: :data:`RUN_FILES`).
- ``last.pt`` adds the training state a trainer registers, one entry per object under its key
  (:func:`state_entries`, :func:`restore_state`: networks, optimisers, schedules, loss scalers,
  random generators, image pools), and the loop's own state (step, scores, split, RNG, ...).

Versions 1 (before the ``version`` entry), 2 (before ``instances``) and 3 (before
``postprocessing``) still load; a newer version is refused in one line.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cganseg import checks, pretrained
from cganseg.errors import InputError
from cganseg.instances.postprocessing import ENTRY as POST_ENTRY
from cganseg.instances.postprocessing import PostProcessing
from cganseg.runtime.atomic import atomic_path

SEGMENTER_FORMAT = "cganseg.segmenter/1"
#: the payload layout's version; a checkpoint without one is version 1 (same keys)
VERSION = 4
#: key prefixes of the two networks other commands read back
SEGMENTER, GENERATOR = "model", "generator"


def network_entries(key: str, net: torch.nn.Module) -> dict[str, Any]:
    """``KEY_config`` (what rebuilds the network) and ``KEY_state`` (its weights, on the CPU)."""
    return {f"{key}_config": dict(net.config), f"{key}_state": _cpu_state(net)}


def segmenter_payload(
    model: torch.nn.Module, channels: Any, post: PostProcessing
) -> dict[str, Any]:
    """The checkpoint entries that ``cganseg segment`` (``load_segmenter``) needs: the network,
    the image channels and the post-processing as one entry."""
    return {
        "format": SEGMENTER_FORMAT,
        "version": VERSION,
        **network_entries(SEGMENTER, model),
        "channels": channels,
        POST_ENTRY: post.entry(),
    }


def shipped_payload(payload: dict[str, Any], half: bool = True) -> dict[str, Any]:
    """What a shipped starting model keeps of a run's checkpoint (:mod:`cganseg.pretrained`):
    the entries of :func:`segmenter_payload`, its weights in half precision (half the bytes;
    ``load_state_dict`` widens them to the network's float32; ``half`` False keeps float32, for
    the benchmarks' leave-one-set-out starts), nothing of the training state; and
    ``default_diameter`` auto for a rescaling model (measured: auto scored best or within 0.003
    of best on each DSB set's held-out images, benchmarks/start_models.py)."""
    kept = {k: payload[k] for k in ("format", "version", f"{SEGMENTER}_config", "channels",
                                    POST_ENTRY) if k in payload}  # fmt: skip
    kept[f"{SEGMENTER}_state"] = {k: v.half() if half and v.is_floating_point() else v
                                  for k, v in payload[f"{SEGMENTER}_state"].items()}  # fmt: skip
    if payload.get(POST_ENTRY, {}).get("cell_diameter"):
        kept["default_diameter"] = "auto"  # its training median is of several sets, not yours
    return kept


def _cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def state_entries(objects: Mapping[str, Any]) -> dict[str, Any]:
    """The ``last.pt`` entries of a trainer's registered state, one per key: a network's
    weights, a random generator's state, else the object's ``state_dict()``."""
    out: dict[str, Any] = {}
    for key, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            out[key] = _cpu_state(obj)
        elif isinstance(obj, torch.Generator):
            out[key] = obj.get_state()
        else:
            out[key] = obj.state_dict()
    return out


def restore_state(objects: Mapping[str, Any], payload: dict[str, Any], path: Path) -> None:
    """Load every registered object from its entry of ``payload`` (a ``last.pt``); one line
    naming the entry when it is missing or does not fit."""
    for key, obj in objects.items():
        if key not in payload:
            raise InputError(f"holds no {key!r} entry; not a last.pt of this kind of run", path)
        try:
            if isinstance(obj, torch.Generator):
                obj.set_state(payload[key])
            else:
                obj.load_state_dict(payload[key])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise InputError(f"cannot restore {key!r} ({first})", path) from None


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
    version = payload.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise InputError(
            f"written by a newer cganseg (checkpoint version {version}, this one reads up to "
            f"{VERSION}); update cganseg",
            path,
        )
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


#: the files of a run folder each network is read from, first choice first. ``best.pt`` is
#: chosen by the segmenter's validation score, which says nothing of the generator: with a
#: pre-trained segmenter (issue 17's default) the best step can be the first validation, whose
#: generator is barely trained (a DSB run: FID 352 at best.pt, 139 at the last step). In the
#: other DSB runs of benchmarks/value.py the last step's FID was within 3 of best.pt's or lower.
RUN_FILES = {SEGMENTER: ("best.pt", "last.pt"), GENERATOR: ("last.pt", "best.pt")}


def resolve_checkpoint(path: str | Path, key: str = SEGMENTER) -> Path:
    """A checkpoint file, or the file of a run folder that the network under ``key``
    (:data:`SEGMENTER` or :data:`GENERATOR`) is read from (:data:`RUN_FILES`), or the weights
    of a shipped starting model named so (:mod:`cganseg.pretrained`; a path on disk wins)."""
    path = Path(path)
    if not path.exists() and key == SEGMENTER and pretrained.is_shipped(str(path)):
        return pretrained.weights(str(path))
    if path.is_dir():
        for name in RUN_FILES[key]:
            if (path / name).is_file():
                return path / name
        raise InputError("run folder holds no best.pt or last.pt", path)
    if not path.exists():
        shipped = ", ".join(pretrained.cards()) or "none"
        raise InputError("checkpoint not found (not a file, a run folder or a shipped model: "
                         f"{shipped})", path)  # fmt: skip
    return path


def _stored_network(path: str | Path, key: str) -> tuple[Path, dict[str, Any], str]:
    what = "segmenter" if key == SEGMENTER else key
    ckpt_path = resolve_checkpoint(path, key)
    payload = load_checkpoint(ckpt_path)
    if f"{key}_config" not in payload or f"{key}_state" not in payload:
        hint = ("; only a `cganseg train` (cGAN-Seg) run has one, `train-seg` trains the "
                "segmenter alone") if key == GENERATOR else ""  # fmt: skip
        raise InputError(f"checkpoint holds no {what}{hint}", ckpt_path)
    return ckpt_path, payload, what


def _load_weights(net: torch.nn.Module, payload: dict[str, Any], key: str, what: str,
                  path: Path) -> None:  # fmt: skip
    try:
        net.load_state_dict(payload[f"{key}_state"])
    except RuntimeError as exc:
        reason = str(exc)[:200]
        raise InputError(f"{what} weights do not fit its config ({reason})", path) from None


def load_network(
    path: str | Path, key: str, builder: Callable[[dict[str, Any]], torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network under ``key`` (:data:`SEGMENTER` or :data:`GENERATOR`) of a
    checkpoint or run folder; returns it on the CPU in eval mode, and the whole payload."""
    ckpt_path, payload, what = _stored_network(path, key)
    try:
        network = builder(payload[f"{key}_config"])
    except InputError as exc:  # a config that no cganseg wrote: say so, not what broke
        raise InputError(f"{checks.NOT_USABLE}: {exc}", ckpt_path) from None
    _load_weights(network, payload, key, what, ckpt_path)
    return network.eval(), payload


def load_into(path: str | Path, key: str, net: torch.nn.Module) -> dict[str, Any]:
    """Load the weights under ``key`` of a checkpoint or run folder into ``net``, which must be
    built as the stored network (same config); returns the payload."""
    ckpt_path, payload, what = _stored_network(path, key)
    stored, ours = dict(payload[f"{key}_config"]), dict(net.config)
    if stored != ours:
        keys = sorted(k for k in set(stored) | set(ours) if stored.get(k) != ours.get(k))
        differ = ", ".join(f"{k} {stored.get(k)} vs {ours.get(k)}" for k in keys)
        raise InputError(f"its {what} is built otherwise than this run's ({differ})", ckpt_path)
    _load_weights(net, payload, key, what, ckpt_path)
    return payload
