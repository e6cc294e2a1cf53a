"""Post-processing thresholds tuned on the validation images at the end of training (issue 16).

As StarDist does for its probability and NMS thresholds: the network is fixed, so its outputs on
the validation images are computed once, the flows are followed once per cell-probability
threshold, and every pair of thresholds on a small grid turns them into cells; the pair with the
best mean F1 over IoU 0.5:0.95 (per image, ties: the earlier, more Cellpose-like pair) is stored
in ``best.pt`` and used by ``cganseg segment``. The mean over IoU thresholds, not F1@0.5 alone,
so that a threshold that keeps cells but cuts their outlines does not win. Only the flow mode has
thresholds so far: the cell-probability logit and the flow error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cganseg.data.dataset import Sample
from cganseg.data.flows import CELLPROB_THRESHOLD, FLOW_THRESHOLD
from cganseg.evaluation.evaluate import evaluate_pairs
from cganseg.inference.instances import (
    drop_bad_flows,
    flow_errors,
    follow_flows,
    tidy_flow_cells,
)
from cganseg.inference.segment import Segmenter
from cganseg.runtime.interrupt import check

#: what a stop asked for during tuning says (``--resume`` of a finished run tunes again)
STOPPED = ("stopped while choosing the flow thresholds after the last step; best.pt keeps its "
           "thresholds, --resume chooses them again")  # fmt: skip
#: Cellpose's defaults first, so a tie keeps them
CELLPROB_GRID = (CELLPROB_THRESHOLD, -1.0, 1.0, -2.0)
FLOW_GRID = (FLOW_THRESHOLD, 0.2, 0.6, 0.0)  # 0: no cell is dropped for its flows


def tune_flow_thresholds(
    seg: Segmenter, samples: Sequence[Sample], tile_size: int
) -> dict[str, float]:
    """The best ``cellprob_threshold`` and ``flow_threshold`` on ``samples``, and its score."""
    outputs = []
    for sample in samples:
        outputs.append(seg.predict(sample.image, tile_size=tile_size))
        check(STOPPED)
    best: dict[str, float] = {}
    for cellprob in CELLPROB_GRID:  # following the flows is the costly part: once per logit
        cells = []
        for out in outputs:
            cells.append(follow_flows(out, cellprob))
            check(STOPPED)
        errors = [flow_errors(c, out) for c, out in zip(cells, outputs, strict=True)]
        for flow in FLOW_GRID:
            report = evaluate_pairs(
                (s.name, s.labels, tidy_flow_cells(drop_bad_flows(c, e, flow), seg.min_size))
                for s, c, e in zip(samples, cells, errors, strict=True)
            )
            score = float(np.mean(report["per_image"]["f1"]))
            if not best or score > best["val_mean_f1"]:
                best = {"cellprob_threshold": cellprob, "flow_threshold": flow,
                        "val_mean_f1": score}  # fmt: skip
    return best
