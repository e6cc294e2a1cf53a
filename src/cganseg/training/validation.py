"""Validation of a segmenter during training: F1 at IoU 0.5 (the paper's Table 1 metric) and Dice.

Model selection and early stopping in both trainers use the per-image mean F1@0.5 of the
validation images, segmented whole (tiled) exactly as ``cganseg segment`` would.
"""

from __future__ import annotations

from collections.abc import Sequence

from cganseg.data.dataset import Sample
from cganseg.evaluation.evaluate import evaluate_pairs
from cganseg.inference.segment import Segmenter

VAL_COLUMNS = ("val_f1_iou50", "val_dice")


def validate_segmenter(
    seg: Segmenter, samples: Sequence[Sample], *, tile_size: int = 512
) -> dict[str, float]:
    """Segment the validation samples and score them against their labels."""
    report = evaluate_pairs(
        ((s.name, s.labels, seg.segment(s.image, tile_size=tile_size)) for s in samples),
        thresholds=(0.5,),
    )
    return {"val_f1_iou50": float(report["per_image"]["f1"][0]), "val_dice": float(report["dice"])}
