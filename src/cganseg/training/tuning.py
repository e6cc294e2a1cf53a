"""Post-processing thresholds tuned on the validation images at the end of training (issue 16).

As StarDist does for its probability and NMS thresholds: the network is fixed, so its outputs on
the validation images are computed once; every point of the instance mode's threshold grid
(:attr:`cganseg.instances.base.InstanceMode.threshold_grid`; the flow mode follows its flows once
per cell-probability threshold) turns them into cells, and the point with the best mean F1 over
IoU 0.5:0.95 (per image, ties: the earlier, more Cellpose-like point) is stored in ``best.pt`` and
used by ``cganseg segment``. The mean over IoU thresholds, not F1@0.5 alone, so that a threshold
that keeps cells but cuts their outlines does not win. A mode without thresholds tunes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cganseg.data.dataset import Sample
from cganseg.data.rescale import resize_image
from cganseg.evaluation.evaluate import evaluate_pairs
from cganseg.inference.segment import Segmenter
from cganseg.runtime.interrupt import check

#: what a stop asked for during tuning says (``--resume`` of a finished run tunes again)
STOPPED = ("stopped while choosing the post-processing thresholds after the last step; best.pt "
           "keeps its thresholds, --resume chooses them again")  # fmt: skip


def tune_thresholds(seg: Segmenter, samples: Sequence[Sample], tile_size: int) -> dict[str, float]:
    """The best point of ``seg``'s threshold grid on ``samples`` and its score
    (``val_mean_f1``); empty for a mode without thresholds. Images are taken one at a time (a
    stop asked for ends the search between two), so memory holds one image's outputs."""
    mode = seg.post.mode
    if not mode.threshold_grid or not samples:
        return {}
    sums: dict[tuple[tuple[str, float], ...], float] = {}
    for sample in samples:
        shape = sample.labels.shape
        output = seg.predict(sample.image, tile_size=tile_size,
                             shape=seg.label_shape(sample.image.shape))  # as segment finds cells
        full = resize_image(output, shape) if output.shape[-2:] != shape else None
        for point, labels in mode.threshold_search(output, seg.post.min_size):
            if full is not None:
                labels = seg.post.fit_to(labels, full, point)
            report = evaluate_pairs([(sample.name, sample.labels, labels)])
            key = tuple(point.items())
            sums[key] = sums.get(key, 0.0) + float(np.mean(report["per_image"]["f1"]))
        check(STOPPED)
    best: dict[str, float] = {}
    for key, total in sums.items():  # in grid order: a tie keeps the earlier point
        score = total / len(samples)
        if not best or score > best["val_mean_f1"]:
            best = {**dict(key), "val_mean_f1": score}
    return best
