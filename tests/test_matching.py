"""Instance matching over IoU thresholds, checked on label images with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cganseg.evaluation.matching import (
    THRESHOLDS,
    match_counts,
    match_instances,
    overlap,
    scores_from_counts,
)


def square_labels(shape=(32, 32)) -> np.ndarray:
    """Three separate squares with non-consecutive ids."""
    lab = np.zeros(shape, dtype=np.int32)
    lab[2:10, 2:10] = 3
    lab[12:20, 2:12] = 7
    lab[22:30, 15:30] = 11
    return lab


def test_default_thresholds():
    assert THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_identical_images_score_one():
    lab = square_labels()
    counts = match_counts(lab, lab)
    np.testing.assert_array_equal(counts["tp"], 3)
    np.testing.assert_array_equal(counts["fp"], 0)
    np.testing.assert_array_equal(counts["fn"], 0)
    np.testing.assert_allclose(counts["matched_iou_sum"], 3.0)
    for name, values in scores_from_counts(counts).items():
        np.testing.assert_allclose(values, 1.0, err_msg=name)


def test_shifted_square_has_known_iou():
    gt = np.zeros((12, 20), dtype=np.uint16)
    pred = np.zeros_like(gt)
    gt[1:11, 0:10] = 1
    pred[1:11, 4:14] = 1  # overlaps 6 columns: IoU = 60 / 140
    counts = match_counts(gt, pred, (0.4, 0.42, 0.43, 0.5))
    np.testing.assert_array_equal(counts["tp"], [1, 1, 0, 0])
    np.testing.assert_array_equal(counts["fp"], [0, 0, 1, 1])
    np.testing.assert_array_equal(counts["fn"], [0, 0, 1, 1])
    np.testing.assert_allclose(counts["matched_iou_sum"], [60 / 140, 60 / 140, 0, 0])
    scores = scores_from_counts(counts)
    np.testing.assert_allclose(scores["mean_matched_iou"], [60 / 140, 60 / 140, 0, 0])
    np.testing.assert_allclose(scores["panoptic_quality"], [60 / 140, 60 / 140, 0, 0])


def test_split_object_matches_one_half_only():
    gt = np.zeros((10, 10), dtype=np.int32)
    gt[:, :] = 5
    pred = np.zeros_like(gt)
    pred[:, :5] = 1
    pred[:, 5:] = 2  # each half has IoU exactly 0.5 with the ground-truth cell
    res = match_instances(gt, pred, (0.5, 0.55))
    assert (res[0].tp, res[0].fp, res[0].fn) == (1, 1, 0)  # one-to-one despite two candidates
    assert res[0].matched_iou_sum == pytest.approx(0.5)
    assert (res[1].tp, res[1].fp, res[1].fn) == (0, 2, 1)


def test_merged_prediction_is_one_tp_and_one_fn():
    gt = np.zeros((10, 10), dtype=np.int32)
    gt[:, :3] = 1
    gt[:, 3:] = 2
    pred = (gt > 0).astype(np.int32)  # merges both cells: IoU 0.3 and 0.7
    counts = match_counts(gt, pred, (0.25, 0.5, 0.75))
    np.testing.assert_array_equal(counts["tp"], [1, 1, 0])
    np.testing.assert_array_equal(counts["fn"], [1, 1, 2])
    np.testing.assert_array_equal(counts["fp"], [0, 0, 1])
    np.testing.assert_allclose(counts["matched_iou_sum"], [0.7, 0.7, 0.0])


def test_invariant_to_label_permutation_and_large_ids():
    rng = np.random.default_rng(1)
    gt = square_labels()
    pred = np.roll(gt, (1, 2), axis=(0, 1))
    pred[0:4, 20:26] = 2  # an extra prediction
    base = match_counts(gt, pred, (0.3, 0.5, 0.7))
    gt_ids = np.array([65535, 70000, 4_000_000_000], dtype=np.uint32)
    relabel_gt = np.zeros(gt.shape, dtype=np.uint32)
    for old, new in zip([3, 7, 11], rng.permutation(gt_ids), strict=True):
        relabel_gt[gt == old] = new
    relabel_pred = np.zeros(pred.shape, dtype=np.uint32)
    for old, new in zip([2, 3, 7, 11], [70000, 9, 65535, 123], strict=True):
        relabel_pred[pred == old] = new
    moved = match_counts(relabel_gt, relabel_pred, (0.3, 0.5, 0.7))
    for key in base:
        np.testing.assert_allclose(moved[key], base[key], err_msg=key)
    assert base["fp"][0] == 1 and base["tp"][0] == 3


def test_overlap_ids_areas_and_iou():
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[0:2, 0:2] = 9  # area 4
    pred = np.zeros_like(gt)
    pred[0:2, 1:3] = 70000  # area 4, overlap 2 -> IoU 2/6
    pred[5, 5] = 3  # no overlap
    ov = overlap(gt, pred)
    np.testing.assert_array_equal(ov.gt_ids, [9])
    np.testing.assert_array_equal(ov.pred_ids, [3, 70000])
    np.testing.assert_array_equal(ov.rows, [0])
    np.testing.assert_array_equal(ov.cols, [1])
    np.testing.assert_allclose(ov.iou, [2 / 6])


def test_empty_images_edge_cases_follow_stardist():
    """StarDist's ``matching``: every ratio with a zero denominator is 0 (changed by design in
    issue 14: before, 0/0 counted as 1, so an empty prediction had precision 1)."""
    empty = np.zeros((8, 8), dtype=np.int32)
    cells = np.zeros_like(empty)
    cells[1:4, 1:4] = 1
    cells[5:8, 5:8] = 2

    both = scores_from_counts(match_counts(empty, empty, (0.5,)))
    for name, values in both.items():
        assert values[0] == 0.0, name

    only_pred = scores_from_counts(match_counts(empty, cells, (0.5,)))
    assert only_pred["precision"][0] == 0.0
    assert only_pred["recall"][0] == 0.0
    assert only_pred["f1"][0] == 0.0
    assert only_pred["accuracy"][0] == 0.0
    assert only_pred["panoptic_quality"][0] == 0.0
    assert only_pred["mean_matched_iou"][0] == 0.0

    only_gt = scores_from_counts(match_counts(cells, empty, (0.5,)))
    assert only_gt["precision"][0] == 0.0
    assert only_gt["accuracy"][0] == 0.0
    assert only_gt["panoptic_quality"][0] == 0.0
    assert only_gt["recall"][0] == 0.0
    assert only_gt["f1"][0] == 0.0
    assert only_gt["mean_matched_iou"][0] == 0.0


def test_f1_agrees_with_precision_and_recall_including_edge_cases():
    grid = np.array([(tp, fp, fn) for tp in range(4) for fp in range(4) for fn in range(4)])
    counts = {"tp": grid[:, 0], "fp": grid[:, 1], "fn": grid[:, 2], "matched_iou_sum": grid[:, 0]}
    s = scores_from_counts(counts)
    p, r = s["precision"], s["recall"]
    harmonic = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    np.testing.assert_allclose(s["f1"], harmonic)


def test_rejects_bad_input():
    lab = square_labels()
    with pytest.raises(ValueError, match="shape"):
        match_counts(lab, lab[:-1])
    with pytest.raises(ValueError, match="integer"):
        match_counts(lab, lab.astype(np.float32))
    with pytest.raises(ValueError, match="threshold"):
        match_counts(lab, lab, (0.0, 0.5))
    with pytest.raises(ValueError, match="threshold"):
        match_counts(lab, lab, ())


def _random_pair(rng: np.random.Generator, n: int = 6, size: int = 12):
    """Crowded random rectangles and a jittered, resized copy drawn in reverse order."""
    gt = np.zeros((size, size), dtype=np.int32)
    pred = np.zeros_like(gt)
    for i in range(1, n + 1):
        y, x = rng.integers(0, size - 3, size=2)
        h, w = rng.integers(3, 7, size=2)
        gt[y : y + h, x : x + w] = i
        dy, dx, dh, dw = rng.integers(-2, 3, size=4)
        pred[max(y + dy, 0) : y + dy + h + dh, max(x + dx, 0) : x + dx + w + dw] = n + 1 - i
    return gt, pred


def _brute_force(gt: np.ndarray, pred: np.ndarray, threshold: float) -> tuple[int, float]:
    """Best (count, IoU sum) over every one-to-one matching, from a dense IoU matrix."""
    g_ids = [i for i in np.unique(gt) if i]
    p_ids = [j for j in np.unique(pred) if j]
    iou = np.zeros((len(g_ids), len(p_ids)))
    for a, gi in enumerate(g_ids):
        for b, pj in enumerate(p_ids):
            inter = np.sum((gt == gi) & (pred == pj))
            iou[a, b] = inter / np.sum((gt == gi) | (pred == pj))

    def best(row: int, used: frozenset) -> tuple[int, float]:
        if row == len(g_ids):
            return 0, 0.0
        options = [best(row + 1, used)]
        for col in range(len(p_ids)):
            if col not in used and iou[row, col] >= threshold:
                n, s = best(row + 1, used | {col})
                options.append((n + 1, s + iou[row, col]))
        return max(options)

    return best(0, frozenset())


def test_hungarian_equals_brute_force_on_ambiguous_random_pairs():
    rng = np.random.default_rng(0)
    thresholds = (0.1, 0.3, 0.5, 0.6)
    ambiguous = 0
    for _ in range(40):
        gt, pred = _random_pair(rng)
        ov = overlap(gt, pred)
        cand = ov.iou >= 0.3
        rows, cols = np.bincount(ov.rows[cand]), np.bincount(ov.cols[cand])
        ambiguous += max(rows.max(initial=0), cols.max(initial=0)) > 1
        counts = match_counts(gt, pred, thresholds)
        for k, t in enumerate(thresholds):
            n, s = _brute_force(gt, pred, t)
            assert counts["tp"][k] == n, (t, counts, n)
            assert counts["matched_iou_sum"][k] == pytest.approx(s), (t, counts, s)
    assert ambiguous >= 5  # the examples exercise the assignment, not just the direct path
