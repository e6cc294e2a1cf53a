"""Which images to correct next (issue 30, item 2): rank unannotated images by how unsure the
model is of them, and write the top ones ready to correct.

With few annotations the biologist's time is the scarce resource; an image the model already
segments the same way however it is presented teaches little, one whose cells change when the
image is flipped or turned teaches most. So each image is segmented as it is and in three views
(mirrored left-right, mirrored up-down, turned by 90 degrees; the labels turned back), and the
views are compared with the plain segmentation:

- **per cell**, its *confidence*: the mean over the views of its best IoU with a cell of the
  view (1: every view finds the same outline; 0: no view finds it); a cell that only a view
  finds counts 0 where it lies;
- **per image**, its *score*: the mean over the views of 1 - (mean F1 over IoU 0.5:0.95 between
  the plain and the view's cells), so both cells found or lost and outlines that move count.

At ``diameter="auto"`` the cells are measured once, on the plain image, and the views are
segmented at that size: they show the same cells, so only the model's disagreement counts.

The top ``n`` images are written as a folder ready to correct and to train on: ``NAME.ext`` (the
image), its predicted labels as ``NAME_seg.npy`` (Cellpose GUI) or ``NAME_rois.zip`` (Fiji),
``confidence/NAME.tif`` (float32, per pixel the confidence of its cell; 1 on background all
views agree on; in a subfolder, so the folder stays a training folder), and ``ranking.csv`` of
every image. Corrected, the folder trains as it is
(:mod:`cganseg.data.corrections`).
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cganseg.data.io import read_image
from cganseg.data.label_formats import SAVE_FORMATS
from cganseg.errors import InputError
from cganseg.evaluation.matching import THRESHOLDS, match_counts, overlap, scores_from_counts
from cganseg.inference.segment import Segmenter, prepare_image
from cganseg.runtime.atomic import atomic_path, write_text
from cganseg.runtime.interrupt import check
from cganseg.runtime.progress import progress_bar

#: the formats a suggestion's labels are written in (the ones corrections are read back from)
CORRECTION_FORMATS = ("seg.npy", "rois")

Array = np.ndarray
#: each view: the image (C, H, W) as the network sees it, and its labels (H, W) turned back
VIEWS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "mirror left-right": (lambda x: x[..., ::-1], lambda y: y[..., ::-1]),
    "mirror up-down": (lambda x: x[..., ::-1, :], lambda y: y[..., ::-1, :]),
    "turn 90": (lambda x: np.rot90(x, 1, axes=(-2, -1)), lambda y: np.rot90(y, -1, axes=(-2, -1))),
}


@dataclass(frozen=True)
class Suggestion:
    """One ranked image: its file, score (higher: correct it sooner), cells and the per-pixel
    confidence map (see the module docstring)."""

    path: Path
    score: float
    labels: np.ndarray
    confidence: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(np.unique(self.labels[self.labels > 0]))

    @property
    def mean_confidence(self) -> float:
        cells = self.labels > 0
        return float(self.confidence[cells].mean()) if cells.any() else 1.0


def _best_iou(ov_ids: np.ndarray, rows: np.ndarray, iou: np.ndarray) -> np.ndarray:
    best = np.zeros(ov_ids.size)
    np.maximum.at(best, rows, iou)
    return best


def _paint(labels: np.ndarray, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per pixel the value of its cell (``values`` aligned with ``ids``), NaN off the cells."""
    lut = np.full(int(labels.max(initial=0)) + 1, np.nan)
    lut[ids] = values
    return lut[labels]


def agreement(plain: np.ndarray, view: np.ndarray) -> tuple[float, np.ndarray]:
    """How much a view's labels agree with the plain ones: mean F1 over IoU 0.5:0.95 (1 when
    both are empty), and the per-pixel confidence (module docstring)."""
    if not plain.any() and not view.any():
        return 1.0, np.ones(plain.shape)
    f1 = float(np.mean(scores_from_counts(match_counts(plain, view, THRESHOLDS))["f1"]))
    ov = overlap(plain, view)
    of_plain = _paint(plain, ov.gt_ids, _best_iou(ov.gt_ids, ov.rows, ov.iou))
    of_view = _paint(view, ov.pred_ids, _best_iou(ov.pred_ids, ov.cols, ov.iou))
    confidence = np.where(plain > 0, of_plain, np.where(view > 0, of_view, 1.0))
    return f1, confidence


def rank(
    segmenter: Segmenter,
    paths: Sequence[Path],
    *,
    tile_size: int = 512,
    batch_size: int = 4,
    diameter: float | str | None = None,
    progress: bool = True,
) -> list[Suggestion]:
    """Every image of ``paths`` scored, most worth correcting first (ties by name)."""
    segmenter.factor(diameter)  # a diameter far from the model's: refused before any image
    found = []
    for path in progress_bar(paths, desc="suggest", unit="img", disable=not progress):
        image = prepare_image(segmenter, read_image(path, segmenter.channels), path, diameter)
        plain, used = segmenter.segment_measured(image, tile_size, batch_size, diameter)
        f1s, maps = [], []
        for forward, back in VIEWS.values():  # at the plain view's (measured) diameter
            seen = np.ascontiguousarray(forward(image))
            view = np.ascontiguousarray(back(segmenter.segment(seen, tile_size, batch_size,
                                                               used)))  # fmt: skip
            f1, confidence = agreement(plain, view)
            f1s.append(f1)
            maps.append(confidence)
        found.append(Suggestion(Path(path), 1.0 - float(np.mean(f1s)), plain,
                                np.mean(maps, axis=0).astype(np.float32)))  # fmt: skip
        check(f"stopped after ranking {len(found)} of {len(paths)} images; nothing written")
    return sorted(found, key=lambda s: (-s.score, s.path.name))


def write_suggestions(suggestions: Sequence[Suggestion], out_dir: str | Path, n: int,
                      label_format: str = "seg.npy") -> list[Path]:  # fmt: skip
    """The top ``n`` as a folder ready to correct (module docstring) and ``ranking.csv`` of all;
    returns the images written."""
    if label_format not in CORRECTION_FORMATS:
        raise InputError(f"--format must be one of {', '.join(CORRECTION_FORMATS)}, got "
                         f"{label_format!r}")  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = SAVE_FORMATS[label_format]
    written = []
    for s in suggestions[:n]:
        image = out_dir / s.path.name
        with atomic_path(image) as tmp:
            shutil.copyfile(s.path, tmp)
        fmt.write(out_dir / f"{s.path.stem}{fmt.suffix}", s.labels, image, None)
        (out_dir / "confidence").mkdir(exist_ok=True)
        with atomic_path(out_dir / "confidence" / f"{s.path.stem}.tif") as tmp:
            tifffile.imwrite(tmp, s.confidence, compression="zlib")
        written.append(image)
    table = io.StringIO()
    rows = csv.writer(table)
    rows.writerow(["rank", "image", "score", "cells", "mean_cell_confidence", "written"])
    for i, s in enumerate(suggestions, start=1):
        rows.writerow([i, s.path.name, f"{s.score:.4f}", s.n_cells, f"{s.mean_confidence:.4f}",
                       int(i <= n)])  # fmt: skip
    write_text(out_dir / "ranking.csv", table.getvalue())
    return written
