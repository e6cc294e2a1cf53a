"""The notebook API: from a numpy image to instance labels in one call (issue 18).

``cganseg segment`` reads files; a notebook holds arrays of any layout and dtype. Here an array
is brought to (C, H, W) (:func:`cganseg.data.io.image_to_chw`: 2-D, (H, W, C) or (C, H, W)),
given the channels the model was trained on, normalised as training normalised, and segmented
with the run's post-processing, exactly as ``cganseg segment`` does for a file::

    import cganseg
    labels = cganseg.segment(image, model="runs/my_run")   # (H, W) int32, 0 = background

A loaded model is kept (by checkpoint file, its modification time and the device), so calling
``segment`` in a loop loads it once; :meth:`Segmenter.segment` stays the lower-level call for
images already normalised to (C, H, W) in [-1, 1].
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from cganseg import checks
from cganseg.checkpoint import resolve_checkpoint
from cganseg.data.io import image_to_chw
from cganseg.data.rescale import cell_diameter
from cganseg.inference.segment import (
    Segmenter,
    load_segmenter,
    prepare_image,
    warn_if_sizes_differ,
)


def load(model: str | Path, device: str = "auto") -> Segmenter:
    """The segmenter of a run folder, checkpoint or shipped model, loaded once per file version
    and device."""
    path = resolve_checkpoint(model)
    return _cached(str(path.resolve()), path.stat().st_mtime_ns, device)


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, device: str) -> Segmenter:
    return load_segmenter(path, device)


def segment(
    image: np.ndarray,
    model: str | Path | Segmenter,
    *,
    diameter: float | str | None = None,
    tile_size: int = 512,
    device: str = "auto",
) -> np.ndarray:
    """Instance labels (H, W) int32 (0 background, cells 1..N) of one image.

    ``image``: a 2-D, (H, W, C) or (C, H, W) array of any numeric dtype, raw intensities (it is
    normalised here as in training). ``model``: a run folder, a checkpoint file, a shipped
    model's name (``"nuclei"``; ``cganseg models`` lists them) or a loaded :class:`Segmenter`.
    ``diameter``: the cells' size in pixels for a model trained with ``--cell-diameter`` (a
    number, ``"auto"``, or None: the model's default, the training images' own or, for a
    shipped model, ``"auto"``); ``device``:
    where a model named by path runs (``auto``: CUDA when there is one).
    """
    seg = model if isinstance(model, Segmenter) else load(model, device)
    diameter = checks.checked(checks.diameter, "diameter", diameter)
    seg.factor(diameter)  # refused in words before any work
    chw = prepare_image(seg, image_to_chw(image, seg.channels), "the image", diameter)
    tile_size = checks.checked(checks.TILE_SIZE, "tile_size", tile_size)
    labels = seg.segment(chw, tile_size, diameter=diameter)
    assumed = seg.fixed_diameter(diameter)
    if assumed and labels.any():
        warn_if_sizes_differ(assumed, [cell_diameter(labels)])
    return labels
