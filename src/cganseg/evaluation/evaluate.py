"""Evaluate predicted instance masks against ground truth, per image and pooled.

Implements the evaluation of the cGAN-Seg paper (Zargari et al., iScience 2024, "Evaluation"):
precision, recall and F-score of matched cells over IoU thresholds 0.5 ... 0.95, computed per
test image and averaged (the paper's convention, ``per_image``), plus pixel Dice. The same
counts summed over the data set before scoring (StarDist's default) are reported as ``pooled``,
because the two conventions can differ a lot on sets with uneven cell counts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cganseg.data.folders import mask_files, stem_key
from cganseg.data.io import list_image_files, read_labels
from cganseg.errors import InputError
from cganseg.evaluation.dice import DiceCounts, dice_counts
from cganseg.evaluation.hardness import DENSE_FRACTION, hardness
from cganseg.evaluation.matching import (
    COUNT_KEYS,
    SCORE_KEYS,
    THRESHOLDS,
    match_counts,
    scores_from_counts,
)
from cganseg.reports.plots import plot_f1_vs_iou
from cganseg.runtime.atomic import staged_files, write_text
from cganseg.runtime.progress import progress_bar

METRIC_KEYS = ("tp", "fp", "fn", *SCORE_KEYS)
F1_AT = 0.5
"""IoU threshold of the per-image ``f1_iou50`` column (the paper's Table 1)."""


def _to_lists(metrics: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(metrics[k]).tolist() for k in METRIC_KEYS}


def evaluate_pairs(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:
    """Report dict for ``(name, gt, pred)`` label-image pairs.

    Keys: ``thresholds``; ``per_image`` (each metric computed per image, then averaged; tp/fp/fn
    are mean counts per image) and ``pooled`` (tp/fp/fn/IoU sums over the set, then scored),
    each mapping tp, fp, fn, precision, recall, f1, accuracy, panoptic_quality and
    mean_matched_iou to a list aligned with ``thresholds``; ``dice`` (mean per-image Dice),
    ``dice_pooled`` (Dice of summed pixel counts), ``n_images`` and ``images`` (one row per
    image: name, n_gt, n_pred, f1_iou50, tp_iou50, dice). Edge cases follow
    :func:`cganseg.evaluation.matching.scores_from_counts`.
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("at least one IoU threshold is needed")
    # F1 at 0.5 is always reported per image, so match at 0.5 too when it is not requested.
    all_t = sorted({*thresholds, F1_AT})
    sel = [all_t.index(t) for t in thresholds]
    i50 = all_t.index(F1_AT)
    totals = {k: np.zeros(len(thresholds)) for k in COUNT_KEYS}
    per_image_sum = {k: np.zeros(len(thresholds)) for k in METRIC_KEYS}
    dice_total = DiceCounts(0, 0, 0)
    rows: list[dict[str, Any]] = []
    for name, gt, pred in pairs:
        if gt.shape != pred.shape:
            raise InputError(f"shape {gt.shape} of ground truth differs from {pred.shape}", name)
        full = match_counts(gt, pred, all_t)
        counts = {k: v[sel] for k, v in full.items()}
        scores = scores_from_counts(counts)
        for k in COUNT_KEYS:
            totals[k] += counts[k]
        for k in METRIC_KEYS:
            per_image_sum[k] += counts[k] if k in counts else scores[k]
        dc = dice_counts(gt, pred)
        dice_total = dice_total + dc
        f1_50 = scores_from_counts({k: v[i50] for k, v in full.items()})["f1"]
        rows.append(
            {
                "name": name,
                "n_gt": int(full["tp"][0] + full["fn"][0]),
                "n_pred": int(full["tp"][0] + full["fp"][0]),
                "f1_iou50": float(f1_50),
                "tp_iou50": int(full["tp"][i50]),
                "dice": dc.dice,
            }
        )
    if not rows:
        raise ValueError("no image pairs to evaluate")
    if not any(r["n_gt"] for r in rows):
        raise InputError(
            f"the ground truth of all {len(rows)} image(s) holds no cell; there is nothing to "
            "score (every object-level score would be 0)"
        )
    n = len(rows)
    pooled = {k: totals[k].astype(np.int64) for k in ("tp", "fp", "fn")}
    pooled.update(scores_from_counts(totals))
    return {
        "thresholds": thresholds,
        "per_image": _to_lists({k: v / n for k, v in per_image_sum.items()}),
        "pooled": _to_lists(pooled),
        "dice": float(np.mean([r["dice"] for r in rows])),
        "dice_pooled": dice_total.dice,
        "n_images": n,
        "images": rows,
    }


def label_folder(folder: Path) -> Path:
    """A data-set folder's ``masks/`` subfolder if it has one, else the folder itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder not found", folder)
    return folder / "masks" if (folder / "masks").is_dir() else folder


def _by_stem(files: list[Path], folder: Path, strip: str = "") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        stem = stem_key(f.stem.removesuffix(strip) if strip else f.stem)
        if stem in out:
            raise InputError(f"two label images share the name {stem!r} ({out[stem].name})", f)
        out[stem] = f
    if not out:
        raise InputError("no label images found", folder)
    return out


def pair_files(
    gt_dir: Path, pred_dir: Path, mask_suffix: str = "_masks"
) -> list[tuple[Path, Path]]:
    """Pair ground-truth and prediction files by name, sorted by ground-truth name.

    Ground truth is read as :func:`~cganseg.data.folders.mask_files` reads masks: a data-set
    folder's ``masks/``, or in a Cellpose-style folder only the ``NAME_masks`` files (the images
    beside them are not ground truth), which pair with a prediction ``NAME``. Names pair after
    Unicode normalisation. Every file must find exactly one partner.
    """
    gt_files = mask_files(label_folder(gt_dir), mask_suffix)
    gt_folder, pred_dir = gt_files[0].parent, label_folder(pred_dir)
    gts = _by_stem(gt_files, gt_folder)
    preds = _by_stem(list_image_files(pred_dir), pred_dir)
    pairs: list[tuple[Path, Path]] = []
    used: dict[str, Path] = {}
    for stem, gt_file in sorted(gts.items()):
        keys = [stem]
        if mask_suffix and stem.endswith(mask_suffix):
            keys.append(stem.removesuffix(mask_suffix))
        key = next((k for k in keys if k in preds), None)
        if key is None:
            raise InputError(f"no prediction in {pred_dir} for this ground truth", gt_file)
        if key in used:
            raise InputError(f"prediction also pairs with {used[key].name}", preds[key])
        used[key] = gt_file
        pairs.append((gt_file, preds[key]))
    orphans = sorted(set(preds) - set(used))
    if orphans:
        raise InputError(f"no ground truth in {gt_folder} for this prediction", preds[orphans[0]])
    return pairs


def _read_pairs(
    pairs: list[tuple[Path, Path]],
) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    for gt_file, pred_file in pairs:
        gt, pred = read_labels(gt_file), read_labels(pred_file)
        if gt.shape != pred.shape:
            raise InputError(
                f"size {gt.shape} differs from prediction {pred_file} of size {pred.shape}",
                gt_file,
            )
        yield pred_file.stem, gt, pred


def csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write metrics.json, metrics.csv, per_image.csv and f1_vs_iou.png: all four or none."""
    with staged_files(out_dir) as stage:
        _write_report_files(report, stage)


def _write_report_files(report: dict[str, Any], out_dir: Path) -> None:

    write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    header = ["threshold"] + [f"{s}_{k}" for s in ("per_image", "pooled") for k in METRIC_KEYS]
    rows = [
        [t] + [report[s][k][i] for s in ("per_image", "pooled") for k in METRIC_KEYS]
        for i, t in enumerate(report["thresholds"])
    ]
    write_text(out_dir / "metrics.csv", csv_text(header, rows))
    img_header = ["name", "n_gt", "n_pred", "f1_iou50", "dice"]
    img_rows = [[r[k] for k in img_header] for r in report["images"]]
    write_text(out_dir / "per_image.csv", csv_text(img_header, img_rows))
    t = report["thresholds"]
    plot_f1_vs_iou(
        {"per image (mean)": (t, report["per_image"]["f1"]), "pooled": (t, report["pooled"]["f1"])},
        out_dir / "f1_vs_iou.png",
        title=f"F1 vs IoU threshold ({report['n_images']} images)",
    )


def evaluate_folders(
    gt: Path,
    pred: Path,
    out_dir: Path,
    thresholds: Sequence[float] = THRESHOLDS,
    progress: bool = True,
    mask_suffix: str = "_masks",
) -> dict[str, Any]:
    """Evaluate a folder of predicted label images against a folder of ground truth.

    Each folder may be a data-set folder, in which case its ``masks/`` subfolder is used.
    Files are paired by stem (see :func:`pair_files`); a missing partner, an empty folder or a
    size mismatch raises :class:`~cganseg.errors.InputError`. Writes the report files with
    :func:`write_report` and returns the report dict of :func:`evaluate_pairs`.
    """
    pairs = pair_files(gt, pred, mask_suffix)
    bar = progress_bar(
        _read_pairs(pairs), total=len(pairs), desc="evaluate", unit="img", disable=not progress
    )
    report = evaluate_pairs(bar, thresholds)
    write_report(report, out_dir)
    return report


def evaluate_easy_hard(
    gt: Path,
    pred: Path,
    out_dir: Path,
    thresholds: Sequence[float] = THRESHOLDS,
    dense_fraction: float = DENSE_FRACTION,
    progress: bool = True,
    mask_suffix: str = "_masks",
) -> dict[str, Any]:
    """:func:`evaluate_folders` plus separate reports on easy and hard images (paper Table 2).

    Writes the whole-set report into ``out_dir``, the subsets' reports into ``out_dir/easy`` and
    ``out_dir/hard`` (a subset with no image gets none) and ``out_dir/hardness.csv``. Returns
    ``{"all": report, "easy": report or None, "hard": report or None, "hardness": rows}``.
    """
    pairs = pair_files(gt, pred, mask_suffix)
    rows: list[list[Any]] = []

    def classified() -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
        """The pairs, recording each ground truth's group as it is read for the full report."""
        for name, gt_labels, pred_labels in _read_pairs(pairs):
            h = hardness(gt_labels, dense_fraction)
            group = "hard" if h.hard else "easy"
            rows.append([name, group, h.touching_pairs, round(h.cell_fraction, 4)])
            yield name, gt_labels, pred_labels

    bar = progress_bar(classified(),
                       total=len(pairs), desc="evaluate", unit="img", disable=not progress)
    result: dict[str, Any] = {"hardness": rows, "all": evaluate_pairs(bar, thresholds)}
    write_report(result["all"], out_dir)
    for group in ("easy", "hard"):
        subset = [p for p, row in zip(pairs, rows, strict=True) if row[1] == group]
        result[group] = evaluate_pairs(_read_pairs(subset), thresholds) if subset else None
        if subset:
            write_report(result[group], Path(out_dir) / group)
    header = ["name", "group", "touching_pairs", "cell_fraction"]
    write_text(Path(out_dir) / "hardness.csv", csv_text(header, rows))
    return result
