"""The one place that turns a ``--device`` option into a torch device."""

from __future__ import annotations

import torch

from cganseg.errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else Apple's MPS, else CPU; asking for a device that is
    not there is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name == "mps" and not mps_available():
        raise InputError("--device mps was asked for, but PyTorch sees no Apple GPU (MPS)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r} (use cpu, cuda, cuda:N, mps or auto)") from None


def mps_available() -> bool:
    """Whether Apple's Metal GPU can run torch here."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
