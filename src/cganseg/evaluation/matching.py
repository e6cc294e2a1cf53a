"""Instance matching of a ground-truth and a predicted label image over IoU thresholds.

Implements the object-level metric of the cGAN-Seg paper (Zargari et al., iScience 2024,
"Evaluation"): a predicted cell is a true positive when it is matched one-to-one to a
ground-truth cell with IoU at or above the threshold; unmatched ground truth are false negatives
and unmatched predictions false positives. The paper reports F-score over thresholds 0.5 ... 0.95
(Fig. 2) and at 0.5 (Table 1).

The matching is the one used by StarDist and Cellpose: an optimal (Hungarian) assignment that
first maximises the number of pairs with IoU >= threshold and, among those, the sum of their
IoU. Overlaps come from a sparse contingency table of the two label images, so the cost is
linear in the pixels plus the number of overlapping pairs; the assignment is only solved where
it is ambiguous, so images with thousands of objects stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds 0.50, 0.55, ..., 0.95 (the paper's Fig. 2 axis)."""

COUNT_KEYS = ("tp", "fp", "fn", "matched_iou_sum")
SCORE_KEYS = (
    "precision",
    "recall",
    "f1",
    "accuracy",
    "panoptic_quality",
    "mean_matched_iou",
)


@dataclass(frozen=True)
class Overlap:
    """Sparse overlap of two label images: one entry per (gt, pred) pair that share pixels.

    ``rows``/``cols`` index ``gt_ids``/``pred_ids`` (the nonzero labels, sorted), ``iou`` is the
    IoU of each overlapping pair.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    iou: np.ndarray


@dataclass(frozen=True)
class MatchResult:
    """Matching outcome at one IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    matched_iou_sum: float


def _check_labels(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"label images differ in shape: gt {gt.shape} vs pred {pred.shape}")
    for name, arr in (("gt", gt), ("pred", pred)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name} labels must be an integer array, got dtype {arr.dtype}")


def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0:
        raise ValueError("at least one IoU threshold is needed")
    if np.any(~(t > 0) | (t > 1)):
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {list(t)}")
    return t


def _dense_ids(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``x`` and the index of each element in them.

    Same result as ``np.unique(x, return_inverse=True)``; when the values are non-negative and
    not much larger than the pixel count a lookup table replaces the O(n log n) sort.
    """
    if x.size and x.min() >= 0 and int(x.max()) < 4 * x.size + 65536:
        present = np.bincount(x.astype(np.intp)) > 0
        lut = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(x.dtype), lut[x]
    return np.unique(x, return_inverse=True)


def overlap(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Sparse IoU table of every overlapping (gt, pred) object pair.

    Only pixels where either image is nonzero are looked at. Label ids may be any nonzero
    integers (non-consecutive, large); they are mapped to 0..n-1 first. The contingency table
    is a scipy sparse matrix, so its size is the number of overlapping pairs, not n_gt x n_pred.
    """
    _check_labels(gt, pred)
    g = np.asarray(gt, dtype=np.uint8 if gt.dtype == bool else None).ravel()
    p = np.asarray(pred, dtype=np.uint8 if pred.dtype == bool else None).ravel()
    fg = (g != 0) | (p != 0)
    g, p = g[fg], p[fg]
    gt_ids, gi = _dense_ids(g)
    pred_ids, pi = _dense_ids(p)
    gt_area = np.bincount(gi, minlength=gt_ids.size)
    pred_area = np.bincount(pi, minlength=pred_ids.size)
    both = (g != 0) & (p != 0)
    table = coo_matrix(
        (np.ones(np.count_nonzero(both), dtype=np.int64), (gi[both], pi[both])),
        shape=(gt_ids.size, pred_ids.size),
    ).tocsr()  # sums duplicate (gt, pred) entries: intersection areas
    rows = np.repeat(np.arange(gt_ids.size), np.diff(table.indptr))
    cols, inter = table.indices.astype(np.intp), table.data
    union = gt_area[rows] + pred_area[cols] - inter
    # Drop the background entry (id 0) from the id lists; it sorts first when present.
    g0 = int(gt_ids.size > 0 and gt_ids[0] == 0)
    p0 = int(pred_ids.size > 0 and pred_ids[0] == 0)
    return Overlap(
        gt_ids=gt_ids[g0:],
        pred_ids=pred_ids[p0:],
        rows=rows - g0,
        cols=cols - p0,
        iou=inter / union,
    )


def _match_at(ov: Overlap, threshold: float) -> tuple[int, float]:
    """Number of matches and sum of their IoU at one threshold.

    For ``threshold > 0.5`` every object has at most one partner with IoU above 0.5 (two
    disjoint partners would each cover more than half of it), so the candidate pairs already
    form a one-to-one matching and no assignment is needed. Otherwise pairs whose two objects
    have no other candidate are matched directly (they form their own component of the
    candidate graph) and the rest is solved exactly with the Hungarian algorithm.
    """
    cand = ov.iou >= threshold
    rows, cols, iou = ov.rows[cand], ov.cols[cand], ov.iou[cand]
    if threshold > 0.5 or iou.size == 0:
        return int(iou.size), float(iou.sum())
    row_deg = np.bincount(rows, minlength=ov.gt_ids.size)
    col_deg = np.bincount(cols, minlength=ov.pred_ids.size)
    alone = (row_deg[rows] == 1) & (col_deg[cols] == 1)
    tp, iou_sum = int(alone.sum()), float(iou[alone].sum())
    rows, cols, iou = rows[~alone], cols[~alone], iou[~alone]
    if iou.size == 0:
        return tp, iou_sum
    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    # StarDist/Cellpose cost: each candidate is worth 1 plus a tie-break IoU/(2n) whose total
    # over any matching stays below 1/2, so the match count always dominates. Non-candidates
    # cost 0 and are discarded if the solver assigns them.
    n = min(r_ids.size, c_ids.size)
    cost = np.zeros((r_ids.size, c_ids.size))
    cost[r, c] = -(1.0 + iou / (2 * n))
    gain = np.zeros_like(cost)
    gain[r, c] = iou
    sel_r, sel_c = linear_sum_assignment(cost)
    matched = cost[sel_r, sel_c] < 0
    return tp + int(matched.sum()), iou_sum + float(gain[sel_r, sel_c][matched].sum())


def match_instances(
    gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> list[MatchResult]:
    """Match ``pred`` to ``gt`` at each IoU threshold; one :class:`MatchResult` per threshold."""
    t = _check_thresholds(thresholds)
    ov = overlap(gt, pred)
    n_gt, n_pred = ov.gt_ids.size, ov.pred_ids.size
    results = []
    for th in t:
        tp, iou_sum = _match_at(ov, float(th))
        results.append(MatchResult(float(th), tp, n_pred - tp, n_gt - tp, iou_sum))
    return results


def match_counts(
    gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, np.ndarray]:
    """Counts ``tp``, ``fp``, ``fn`` (int64) and ``matched_iou_sum`` (float64) per threshold.

    Arrays are aligned with ``thresholds``. Counts of several images can be summed and passed
    to :func:`scores_from_counts` (pooled scores).
    """
    res = match_instances(gt, pred, thresholds)
    return {
        "tp": np.array([r.tp for r in res], dtype=np.int64),
        "fp": np.array([r.fp for r in res], dtype=np.int64),
        "fn": np.array([r.fn for r in res], dtype=np.int64),
        "matched_iou_sum": np.array([r.matched_iou_sum for r in res], dtype=np.float64),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where den is 0 (StarDist's ``_safe_divide``)."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_counts(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Object-level scores from ``tp``, ``fp``, ``fn``, ``matched_iou_sum`` (any equal shapes).

    - precision = TP / (TP + FP)
    - recall = TP / (TP + FN)
    - f1 = 2 TP / (2 TP + FP + FN)  (equals 2PR / (P + R), also in the edge cases below)
    - accuracy = TP / (TP + FP + FN)  (Cellpose's "average precision")
    - panoptic_quality = matched_iou_sum / (TP + FP/2 + FN/2)
    - mean_matched_iou = matched_iou_sum / TP

    Edge cases follow StarDist's ``matching`` (and the cGAN-Seg reference code): a ratio whose
    denominator is 0 is 0. So an image with cells and an empty prediction has precision 0 (not 1:
    a model that predicts nothing must not score a high per-image precision), recall 0, f1 0; an
    image empty on both sides scores 0 everywhere; empty ground truth with predicted cells gives
    precision 0, recall 0, f1 0. That is why the commands refuse a data set whose ground truth
    holds no cell at all: its scores would say nothing.
    """
    tp = np.asarray(counts["tp"], dtype=np.float64)
    fp = np.asarray(counts["fp"], dtype=np.float64)
    fn = np.asarray(counts["fn"], dtype=np.float64)
    iou_sum = np.asarray(counts["matched_iou_sum"], dtype=np.float64)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp, tp + fp + fn),
        "panoptic_quality": _ratio(iou_sum, tp + (fp + fn) / 2),
        "mean_matched_iou": _ratio(iou_sum, tp),
    }
