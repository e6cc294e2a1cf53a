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

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cganseg import checks
from cganseg.checkpoint import resolve_checkpoint
from cganseg.data.io import image_to_chw, write_image, write_labels
from cganseg.data.rescale import cell_diameter
from cganseg.errors import InputError
from cganseg.evaluation.evaluate import evaluate_pairs
from cganseg.evaluation.matching import THRESHOLDS
from cganseg.inference.segment import (
    Segmenter,
    load_segmenter,
    prepare_image,
    warn_if_sizes_differ,
)
from cganseg.options import SegTrainConfig
from cganseg.training.seg_trainer import train_segmenter
from cganseg.training.settings import resolve


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


def train_seg(
    images: str | Path | Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    *,
    out: str | Path,
    init: str | Path | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Train a segmenter as ``cganseg train-seg`` does, from a folder or from arrays; returns
    the run folder, which :func:`segment` takes as ``model`` (issue 33: a notebook user could
    segment arrays but not train on them).

    ``images``: a data folder (any layout the command reads; ``masks`` None), or a sequence of
    images (2-D, (H, W, C) or (C, H, W), any dtype) with ``masks`` as many instance-label
    arrays (H, W), 0 = background. Arrays are written as TIFFs into ``data_dir`` (default: a
    new folder ``OUT_data`` beside the run), so that the run, like one of the command's, can
    be resumed and its split named. ``init``: a shipped model's name, a run or a checkpoint to
    fine-tune. ``options``: train-seg's options by their config names (``iterations=500``,
    ``cell_diameter=17``, ``device="cpu"``; ``cganseg train-seg --help``).
    """
    out = Path(out)
    if masks is None:
        data = Path(images)  # type: ignore[arg-type]
    else:
        data = Path(data_dir) if data_dir is not None else out.with_name(f"{out.name}_data")
        _write_pairs(list(images), list(masks), data)  # type: ignore[arg-type]
    given = {"data": str(data), "out": str(out), **options}
    if init is not None:
        given["init_seg"] = str(init)
    train_segmenter(resolve(SegTrainConfig, given), progress=progress, given=given)
    return out


def _write_pairs(images: list[np.ndarray], masks: list[np.ndarray], folder: Path) -> None:
    """Arrays as ``folder/images/image_NNN.tif`` + ``folder/masks/image_NNN.tif``, checked
    first (a new or empty folder; one label image of the image's size per image)."""
    if len(images) != len(masks) or not images:
        raise InputError(f"{len(images)} image(s) and {len(masks)} mask(s): give one label "
                         "image per image")  # fmt: skip
    if folder.exists() and any(folder.iterdir()):
        raise InputError("the folder for the arrays exists and is not empty; give data_dir",
                         folder)  # fmt: skip
    checked = []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        chw = image_to_chw(image, None, f"images[{i}]")
        labels = np.asarray(mask)
        if labels.shape != chw.shape[1:] or labels.dtype.kind not in "iub":
            raise InputError(f"masks[{i}] must be an integer label image of shape "
                             f"{chw.shape[1:]}, got {labels.dtype} {labels.shape}")  # fmt: skip
        checked.append((chw, labels))
    for i, (chw, labels) in enumerate(checked):
        name = f"image_{i:03d}.tif"
        write_image(folder / "images" / name, chw[0] if len(chw) == 1 else np.moveaxis(chw, 0, -1))
        write_labels(folder / "masks" / name, labels.astype(np.int32))


def evaluate(
    gt: np.ndarray | Sequence[np.ndarray],
    pred: np.ndarray | Sequence[np.ndarray],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:
    """Scores of predicted instance labels against ground truth, as ``cganseg evaluate``
    computes them, for one pair of (H, W) label arrays or two sequences of them: the report of
    :func:`cganseg.evaluation.evaluate.evaluate_pairs` (``per_image`` and ``pooled`` map f1,
    precision, recall, panoptic_quality... to lists aligned with ``thresholds``; ``dice``;
    ``images``: a row per pair)."""
    single = isinstance(gt, np.ndarray) and gt.ndim == 2
    gts, preds = ([gt], [pred]) if single else (list(gt), list(pred))
    if len(gts) != len(preds):
        raise InputError(f"{len(gts)} ground-truth and {len(preds)} predicted label images")
    pairs = []
    for i, (truth, found) in enumerate(zip(gts, preds, strict=True)):
        truth, found = np.asarray(truth), np.asarray(found)
        if truth.ndim != 2 or truth.shape != found.shape:
            raise InputError(f"pair {i}: label images must be 2-D and of one shape, got "
                             f"{truth.shape} and {found.shape}")  # fmt: skip
        pairs.append((f"image_{i:03d}", truth, found))
    return evaluate_pairs(pairs, thresholds)
