"""One validator per user-facing value, used at every door (issue 27).

A value reaches cganseg through the command line, the notebook API, the napari widget, a config
file and the settings stored in a checkpoint. Checked at one door and not at another, a NaN
threshold, a negative minimum size or a diameter of ``True`` gave zero cells without a word, an
internal error, or a 17x enlargement. So each such value has one rule here, and every door calls
it: the rule says what the value must be, in the same words wherever it came from, and returns
the value in its canonical type (an int, a float, a string). The door adds only where it came
from (``--min-size``, ``option min_size``, ``not a usable cganseg model``).

:data:`SCALE_RANGE` bounds cell-size rescaling (:mod:`cganseg.data.rescale`): a factor outside
it would enlarge or shrink an image so much that the work (or the image) makes no sense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cganseg.errors import InputError

#: the largest enlargement and shrinking of an image by cell-size rescaling: beyond 8x the
#: network works on 64x the pixels (a 256 px image took 146 s to validate at 22x), below 1/8 a
#: cell of 30 px becomes 4 px, too small to segment
SCALE_RANGE = (1 / 8, 8.0)


def _shown(value: float) -> str:
    """A bound as people write it: 4294967295 and 1000000, not 4.29497e+09; 0.125, 1e-06."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


#: how a checkpoint whose stored settings fail their rules is refused
NOT_USABLE = "not a usable cganseg model"


class ValueProblem(ValueError):
    """What is wrong with a value, in words; the door turns it into its own one-line error."""


@dataclass(frozen=True)
class Number:
    """A finite number in ``[low, high]`` (``above``: strictly above ``low``; ``below``: strictly
    below ``high``), an integer when ``integer``; ``None`` allowed when ``optional``. Booleans
    and text are not numbers."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    above: bool = False
    optional: bool = False
    below: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low, high = (None if v is None else _shown(v) for v in (self.low, self.high))
        if low is not None and high is not None:
            opening, closing = "(" if self.above else "[", ")" if self.below else "]"
            return f"{kind} in {opening}{low}, {high}{closing}"
        if low is not None:
            return f"{kind} {'>' if self.above else '>='} {low}"
        return f"a finite {'integer' if self.integer else 'number'}"

    def __call__(self, name: str, value: Any) -> Any:
        """``value`` as an int or float, or :class:`ValueProblem` naming ``name``."""
        if value is None and self.optional:
            return None
        if isinstance(value, np.generic | np.ndarray) and np.ndim(value) == 0:
            value = value.item()  # numpy scalars and 0-d arrays are numbers too
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueProblem(f"{name} must be {self.describe()}, got {value!r}")
        if not math.isfinite(value):
            raise ValueProblem(f"{name} must be {self.describe()}, got {value}")
        if self.integer and value != int(value):
            raise ValueProblem(f"{name} must be {self.describe()}, got {value}")
        low_ok = self.low is None or (value > self.low if self.above else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.below else value <= self.high)
        if not low_ok or not high_ok:
            raise ValueProblem(f"{name} must be {self.describe()}, got {value:g}")
        return int(value) if self.integer else float(value)


#: smallest object kept (pixels)
MIN_SIZE = Number(0, 10**8, integer=True)
#: flows: cell-probability logit threshold (Cellpose's ``cellprob_threshold``)
CELLPROB_THRESHOLD = Number(-50, 50)
#: flows: largest mean squared flow error of a kept cell; 0 keeps all
FLOW_THRESHOLD = Number(0, 1e6)
#: training: the cell diameter (px) the network sees (Cellpose: 30 for cells, 17 for nuclei)
CELL_DIAMETER = Number(4, 500, optional=True)
#: the training cells' own median diameter stored in a checkpoint (px)
TRAIN_DIAMETER = Number(0, 1e5, above=True, optional=True)
#: tiles of segmentation (px)
TILE_SIZE = Number(16, 8192, integer=True)
#: images per forward pass
BATCH_SIZE = Number(1, 4096, integer=True)
#: the width of a stored network (channels of its first layer)
NETWORK_WIDTH = Number(1, 1024, integer=True)
#: input channels of a stored segmenter
IN_CHANNELS = Number(1, 64, integer=True)
#: classes of a stored segmenter
N_CLASSES = Number(2, 64, integer=True)
#: a stored generator's style vector length and mapping depth, and its UNet depth
STYLE_DIM = Number(1, 4096, integer=True)
MAPPING_LAYERS = Number(1, 64, integer=True)
GENERATOR_DEPTH = Number(1, 10, integer=True)
#: seeds: what NumPy's seeding and every torch generator accept
SEED = Number(0, 2**32 - 1, integer=True)
#: synthetic masks: side (px), scaling of the real cell shapes, area share of the cells
MASK_SIDE = Number(8, 16384, integer=True)
SHAPE_SCALE = Number(1 / 8, 8)
DENSITY = Number(0, 1)
#: physical size of a pixel, in its unit
PIXEL_SIZE = Number(0, 1e9, above=True)
#: the cells' diameter in images to segment (px); the scale factor it gives is bounded apart
_DIAMETER_PX = Number(0, 1e6, above=True)


def diameter(name: str, value: Any) -> float | str | None:
    """The cells' diameter in the images to segment: a number of pixels > 0, ``"auto"``
    (measured from a first pass) or None (the training images' own)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        raise ValueProblem(f"{name} must be a number of pixels > 0 or auto, got {value!r}")
    return _DIAMETER_PX(name, value)


def scale_factor(factor: float) -> float:
    """``factor`` if it lies in :data:`SCALE_RANGE`, else :class:`ValueProblem` saying how far
    off it is (the caller says what asked for it)."""
    low, high = SCALE_RANGE
    if not low <= factor <= high:
        verb = f"enlarge images {factor:.3g}x" if factor > 1 else f"shrink images {1 / factor:.3g}x"
        raise ValueProblem(
            f"would {verb} (cell-size rescaling is limited to 1/{1 / low:g}..{high:g}x)"
        )
    return factor


def channels(name: str, value: Any) -> Any:
    """The image channels a model takes: None (all), ``"gray"`` or a list of channel indices."""
    if value is None or value == "gray":
        return value
    if isinstance(value, list | tuple) and value and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 64 for c in value
    ):
        return list(value)
    raise ValueProblem(f"{name} must be gray or a list of channel indices, got {value!r}")


def checked(rule, name: str, value: Any, source=None, prefix: str = "") -> Any:
    """``rule(name, value)``, with a :class:`ValueProblem` raised as the door's one-line
    :class:`InputError` (``prefix`` says where the value came from, ``source`` the file)."""
    try:
        return rule(name, value)
    except ValueProblem as exc:
        raise InputError(f"{prefix}{exc}", source) from None
