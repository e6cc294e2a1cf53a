"""Data-set evaluation: Dice, per-image vs pooled scores, folder pairing and report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cganseg.errors import InputError
from cganseg.evaluation.dice import DiceCounts, dice, dice_counts
from cganseg.evaluation.evaluate import evaluate_folders, evaluate_pairs
from cganseg.reports.plots import (
    plot_f1_vs_iou,
    plot_training_curves,
    training_curves_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = (
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "panoptic_quality",
    "mean_matched_iou",
)


def test_dice_hand_computed():
    gt = np.zeros((4, 4), dtype=np.int32)
    gt[0:2, 0:3] = 4  # 6 pixels
    pred = np.zeros_like(gt)
    pred[1, 0:3] = 1  # 3 pixels inside gt
    pred[3, 3] = 2  # 1 pixel outside
    assert dice_counts(gt, pred) == DiceCounts(intersection=3, gt_area=6, pred_area=4)
    assert dice(gt, pred) == pytest.approx(2 * 3 / 10)
    empty = np.zeros_like(gt)
    assert dice(empty, empty) == 1.0
    assert dice(gt, empty) == 0.0
    assert dice(empty, pred) == 0.0
    # pooled: (2*3 + 0) / (10 + 6) differs from the mean (0.6 + 0) / 2
    pooled = dice_counts(gt, pred) + dice_counts(gt, empty)
    assert pooled.dice == pytest.approx(6 / 16)


def two_image_set() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Image a: one cell found exactly. Image b: three cells, nothing predicted."""
    a = np.zeros((8, 8), dtype=np.int32)
    a[1:3, 1:3] = 1
    b = np.zeros((8, 8), dtype=np.int32)
    b[0:2, 0:2], b[4:6, 0:2], b[0:2, 4:6] = 1, 2, 3
    return [("a", a, a.copy()), ("b", b, np.zeros_like(b))]


def test_per_image_and_pooled_differ_as_hand_computed():
    report = evaluate_pairs(two_image_set(), thresholds=(0.5, 0.9))
    per, pooled = report["per_image"], report["pooled"]
    assert report["thresholds"] == [0.5, 0.9]
    assert report["n_images"] == 2
    # per image: a -> P 1, R 1, F1 1; b -> P 0 (StarDist: 0/0 is 0), R 0, F1 0; then averaged.
    # (changed by design in issue 14: b's precision was 1, "nothing wrong")
    assert per["tp"] == [0.5, 0.5] and per["fn"] == [1.5, 1.5] and per["fp"] == [0.0, 0.0]
    assert per["precision"] == pytest.approx([0.5, 0.5])
    assert per["recall"] == pytest.approx([0.5, 0.5])
    assert per["f1"] == pytest.approx([0.5, 0.5])
    assert per["accuracy"] == pytest.approx([0.5, 0.5])
    assert per["mean_matched_iou"] == pytest.approx([0.5, 0.5])  # a: 1, b: 0 (cells, no TP)
    # pooled: TP 1, FP 0, FN 3.
    assert pooled["tp"] == [1, 1] and pooled["fp"] == [0, 0] and pooled["fn"] == [3, 3]
    assert pooled["precision"] == pytest.approx([1.0, 1.0])
    assert pooled["recall"] == pytest.approx([0.25, 0.25])
    assert pooled["f1"] == pytest.approx([0.4, 0.4])
    assert pooled["accuracy"] == pytest.approx([0.25, 0.25])
    assert pooled["panoptic_quality"] == pytest.approx([1 / 2.5, 1 / 2.5])
    assert pooled["mean_matched_iou"] == pytest.approx([1.0, 1.0])
    # Dice: a 1, b 0 -> mean 0.5; pooled 2*4 / (8 + 12) = 0.4.
    assert report["dice"] == pytest.approx(0.5)
    assert report["dice_pooled"] == pytest.approx(0.4)
    assert report["images"] == [
        {"name": "a", "n_gt": 1, "n_pred": 1, "f1_iou50": 1.0, "tp_iou50": 1, "dice": 1.0},
        {"name": "b", "n_gt": 3, "n_pred": 0, "f1_iou50": 0.0, "tp_iou50": 0, "dice": 0.0},
    ]


def test_f1_at_half_reported_even_if_not_a_threshold():
    gt = np.zeros((12, 20), dtype=np.int32)
    gt[1:11, 0:10] = 1
    pred = np.zeros_like(gt)
    pred[1:11, 3:13] = 1  # IoU 70/130 ~ 0.54: TP at 0.5, not at 0.6
    report = evaluate_pairs([("x", gt, pred)], thresholds=(0.3, 0.6))
    assert report["per_image"]["f1"] == [1.0, 0.0]
    assert report["images"][0]["f1_iou50"] == 1.0


def test_evaluate_pairs_rejects_nothing_and_shape_mismatch():
    with pytest.raises(ValueError, match="no image pairs"):
        evaluate_pairs([])
    with pytest.raises(ValueError, match="threshold"):
        evaluate_pairs(two_image_set(), thresholds=())
    with pytest.raises(InputError, match="img7"):
        evaluate_pairs([("img7", np.zeros((4, 4), int), np.zeros((4, 5), int))])


def save_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, labels.astype(np.uint16))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """GT as a data-set folder (masks/NAME_masks.tif), predictions as plain NAME.tif files."""
    for name, gt, pred in two_image_set():
        save_labels(tmp_path / "gt" / "masks" / f"{name}_masks.tif", gt)
        save_labels(tmp_path / "pred" / f"{name}.tif", pred)
    (tmp_path / "gt" / "images").mkdir()
    return tmp_path / "gt", tmp_path / "pred"


def test_evaluate_folders_writes_all_outputs(folders, tmp_path):
    gt_dir, pred_dir = folders
    out = tmp_path / "out"
    report = evaluate_folders(gt_dir, pred_dir, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "f1_vs_iou.png",
        "metrics.csv",
        "metrics.json",
        "per_image.csv",
    ]  # and no temporary files left behind
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == report
    assert set(saved) == {
        "thresholds",
        "per_image",
        "pooled",
        "dice",
        "dice_pooled",
        "n_images",
        "images",
    }
    assert len(saved["thresholds"]) == 10
    for section in ("per_image", "pooled"):
        assert set(saved[section]) == set(METRICS)
        assert all(len(v) == 10 for v in saved[section].values())
    assert saved["pooled"]["f1"][0] == pytest.approx(0.4)
    assert [r["name"] for r in saved["images"]] == ["a", "b"]

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    assert set(rows[0]) == {"threshold"} | {
        f"{s}_{k}" for s in ("per_image", "pooled") for k in METRICS
    }
    assert float(rows[0]["threshold"]) == 0.5
    assert float(rows[0]["per_image_f1"]) == pytest.approx(0.5)
    with open(out / "per_image.csv", newline="") as fh:
        img_rows = list(csv.DictReader(fh))
    assert [r["n_gt"] for r in img_rows] == ["1", "3"]
    assert (out / "f1_vs_iou.png").read_bytes()[:8] == PNG_MAGIC


def test_missing_prediction_names_the_ground_truth_file(folders):
    gt_dir, pred_dir = folders
    (pred_dir / "b.tif").unlink()
    with pytest.raises(InputError, match="b_masks.tif"):
        evaluate_folders(gt_dir, pred_dir, pred_dir.parent / "out", progress=False)


def test_prediction_without_ground_truth_is_named(folders):
    gt_dir, pred_dir = folders
    save_labels(pred_dir / "c.tif", np.zeros((8, 8), dtype=np.uint16))
    with pytest.raises(InputError, match="c.tif"):
        evaluate_folders(gt_dir, pred_dir, pred_dir.parent / "out", progress=False)


def test_empty_folder_is_an_input_error(folders, tmp_path):
    gt_dir, _ = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no label images"):
        evaluate_folders(gt_dir, empty, tmp_path / "out", progress=False)


def test_size_mismatch_names_both_files(folders):
    gt_dir, pred_dir = folders
    save_labels(pred_dir / "a.tif", np.zeros((9, 8), dtype=np.uint16))
    with pytest.raises(InputError, match="a_masks.tif") as info:
        evaluate_folders(gt_dir, pred_dir, pred_dir.parent / "out", progress=False)
    assert "a.tif" in str(info.value).replace("a_masks.tif", "")


def test_plot_f1_vs_iou_writes_png(tmp_path):
    path = tmp_path / "plots" / "f1.png"
    plot_f1_vs_iou({"a": ([0.5, 0.75], [0.9, 0.4]), "b": ([0.5, 0.75], [0.8, 0.2])}, path, "t")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["f1.png"]


def test_plot_training_curves(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(
        "step,loss_gen,loss_disc,val_f1,run\n1,2.0,1.0,,x\n2,1.5,0.9,0.4,x\n3,1.2,0.8,,x\n"
    )
    out = tmp_path / "curves.png"
    plot_training_curves(metrics, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    no_step = tmp_path / "bad.csv"
    no_step.write_text("epoch,loss\n1,2.0\n")
    with pytest.raises(InputError, match="step"):
        plot_training_curves(no_step, tmp_path / "bad.png")


def test_cgan_training_curves_have_one_panel_per_group_of_terms(tmp_path):
    """Issue 18: twelve curves on one axis could not be read; now at most four per panel, each
    legend beside its panel."""
    metrics = tmp_path / "metrics.csv"
    head = "step,loss,loss_d,d1_g,d2_s,rec_g,rec_s,id_g,id_s,real_d1,real_d2,fake_d1,fake_d2,"
    metrics.write_text(head + "val_f1_iou50,val_dice\n"
                       "10,90,0.5,0.3,,0.4,0.2,0.5,0.3,0.2,,0.3,,,\n"
                       "20,80,0.4,0.3,,0.3,0.2,0.4,0.2,0.2,,0.3,,0.6,0.7\n")  # fmt: skip
    fig = training_curves_figure(metrics)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["total losses (Eq. 16, 17)", "segmenter terms", "generator terms",
                      "discriminator terms", "validation scores"]  # fmt: skip
    labels = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert labels[1] == ["id_s", "rec_s"] and labels[3] == ["real_d1", "fake_d1"]  # empty: out
    conventional = tmp_path / "seg.csv"
    conventional.write_text("step,loss,val_f1_iou50,val_dice\n10,0.5,0.6,0.7\n")
    assert [ax.get_title(loc="left") for ax in training_curves_figure(conventional).axes] == [
        "training loss", "validation scores"]
