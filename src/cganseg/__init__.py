"""cganseg: cell segmentation from small annotated sets with cycle GANs.

``cganseg.segment(image, model=RUN)`` segments a numpy image with a trained run (see
:mod:`cganseg.api`); importing the package alone stays light (torch loads on first use).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "load", "segment", "train_seg"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cganseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'cganseg' has no attribute {name!r}")
