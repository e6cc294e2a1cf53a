"""Registry of the segmentation backbones that cGAN-Seg can train (paper Fig. 1A, "Seg").

The paper trains its segmenter as one of three networks: a 2D UNet, DeepSea, and a Cellpose-style
network without flows. ``build_segmenter`` makes any of them from a name, so the CLI, the trainer
and checkpoint loading share one switch. Every model carries ``config`` (name, in_channels,
n_classes, width); storing it with the weights lets ``build_segmenter(**config)`` rebuild the
exact architecture before ``load_state_dict``.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from cganseg import checks
from cganseg.errors import InputError
from cganseg.models.cpnet import CPnet
from cganseg.models.deepsea import DeepSea
from cganseg.models.unet import UNet

#: every backbone by name, with the base width of the original network (smaller widths make
#: CPU runs practical); a new backbone is its file in models/ and one line here
BACKBONES: dict[str, tuple[type[nn.Module], int]] = {
    "unet": (UNet, 64),
    "deepsea": (DeepSea, 64),
    "cellpose": (CPnet, 32),
}
SEGMENTERS = tuple(BACKBONES)
DEFAULT_WIDTHS = {name: width for name, (_, width) in BACKBONES.items()}


def build_segmenter(
    name: str, in_channels: int, n_classes: int, width: int | None = None
) -> nn.Module:
    """Build segmenter ``name``; ``width=None`` means the original network's base width.

    Sizes are checked by the rules of :mod:`cganseg.checks` (a stored ``width`` of 200000 would
    otherwise allocate for minutes before failing)."""
    if name not in BACKBONES:
        raise InputError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
    width = DEFAULT_WIDTHS[name] if width is None else width
    sizes = {}
    for option, rule, value in (
        ("in_channels", checks.IN_CHANNELS, in_channels),
        ("n_classes", checks.N_CLASSES, n_classes),
        ("width", checks.NETWORK_WIDTH, width),
    ):
        sizes[option] = checks.checked(rule, f"segmenter {option}", value)
    return BACKBONES[name][0](**sizes)


def segmenter_from_config(config: Any) -> nn.Module:
    """The segmenter a stored ``config`` (``model.config``) describes; InputError for anything
    else (not a mapping, an unknown or missing entry, a size out of range)."""
    if not isinstance(config, dict):
        raise InputError(f"segmenter config must be a mapping, got {type(config).__name__}")
    known = set(inspect.signature(build_segmenter).parameters)
    unknown = sorted(map(str, set(config) - known))
    if unknown:
        raise InputError(f"segmenter config has unknown entries: {', '.join(unknown)}")
    missing = sorted(k for k in ("name", "in_channels", "n_classes") if k not in config)
    if missing:
        raise InputError(f"segmenter config lacks: {', '.join(missing)}")
    return build_segmenter(**config)
