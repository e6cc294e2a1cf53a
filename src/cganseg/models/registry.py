"""Registry of the segmentation backbones that cGAN-Seg can train (paper Fig. 1A, "Seg").

The paper trains its segmenter as one of three networks: a 2D UNet, DeepSea, and a Cellpose-style
network without flows. ``build_segmenter`` makes any of them from a name, so the CLI, the trainer
and checkpoint loading share one switch. Every model carries ``config`` (name, in_channels,
n_classes, width); storing it with the weights lets ``build_segmenter(**config)`` rebuild the
exact architecture before ``load_state_dict``.
"""

from __future__ import annotations

from torch import nn

from cganseg.errors import InputError
from cganseg.models.cpnet import CPnet
from cganseg.models.deepsea import DeepSea
from cganseg.models.unet import UNet

SEGMENTERS = ("unet", "deepsea", "cellpose")

# Base channel counts of the original networks; smaller widths make CPU runs practical.
DEFAULT_WIDTHS = {"unet": 64, "deepsea": 64, "cellpose": 32}

_CLASSES: dict[str, type[nn.Module]] = {"unet": UNet, "deepsea": DeepSea, "cellpose": CPnet}


def build_segmenter(
    name: str, in_channels: int, n_classes: int, width: int | None = None
) -> nn.Module:
    """Build segmenter ``name``; ``width=None`` means the original network's base width."""
    if name not in _CLASSES:
        raise InputError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
    width = DEFAULT_WIDTHS[name] if width is None else width
    for option, value, minimum in (
        ("in_channels", in_channels, 1),
        ("n_classes", n_classes, 2),
        ("width", width, 1),
    ):
        if value < minimum:
            raise InputError(f"segmenter {option} must be at least {minimum}, got {value}")
    return _CLASSES[name](in_channels=in_channels, n_classes=n_classes, width=width)
