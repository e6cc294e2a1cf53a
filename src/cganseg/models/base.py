"""What every segmenter shares: its rebuild config and the size rule its input must meet."""

from __future__ import annotations

from torch import nn


class SegmenterBase(nn.Module):
    """Base of the backbones: ``config`` rebuilds the model via ``build_segmenter(**config)``.

    Inputs must have H and W divisible by ``size_multiple`` (callers pad); one rule for all
    backbones keeps the padding code in one place.
    """

    size_multiple = 16

    def __init__(self, name: str, in_channels: int, n_classes: int, width: int) -> None:
        super().__init__()
        self.config = {
            "name": name,
            "in_channels": in_channels,
            "n_classes": n_classes,
            "width": width,
        }
