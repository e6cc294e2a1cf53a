"""Benchmark of instance matching on a crowded 1024x1024 image pair (not a unit test).

Builds a ground truth of ~2000 small squares on a grid and a prediction whose squares are
jittered by up to 3 pixels and resized by up to 1 pixel, some dropped and some split, times
``match_counts`` over the 10 default IoU thresholds (median of 5 runs), prints the result and
writes benchmarks/results/matching.json.

Run from the repository root: ``.venv/bin/python benchmarks/bench_matching.py``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from cganseg.evaluation.matching import THRESHOLDS, match_counts, scores_from_counts
from cganseg.runtime.atomic import write_text

SIZE = 1024
PITCH = 23  # 44 x 44 grid = 1936 objects
SIDE = 16
RUNS = 5


def make_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grid of squares (gt) and a jittered, partly dropped and split copy (pred)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((SIZE, SIZE), dtype=np.uint32)
    pred = np.zeros_like(gt)
    n_cells = SIZE // PITCH
    label = 0
    for i in range(n_cells):
        for j in range(n_cells):
            label += 1
            y, x = 2 + i * PITCH, 2 + j * PITCH
            gt[y : y + SIDE, x : x + SIDE] = label
            if rng.random() < 0.03:
                continue  # missed cell
            dy, dx = rng.integers(-3, 4, size=2)
            h, w = SIDE + rng.integers(-1, 2, size=2)
            py, px = max(y + dy, 0), max(x + dx, 0)
            pid = 100_000 + 7 * label  # non-consecutive ids
            pred[py : py + h, px : px + w] = pid
            if rng.random() < 0.03:
                pred[py : py + h, px + w // 2 : px + w] = pid + 1  # split cell
    return gt, pred


def main() -> None:
    gt, pred = make_pair()
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        counts = match_counts(gt, pred, THRESHOLDS)
        times.append(time.perf_counter() - t0)
    f1 = scores_from_counts(counts)["f1"]
    result = {
        "image_shape": list(gt.shape),
        "n_gt": int(len(np.unique(gt)) - 1),
        "n_pred": int(len(np.unique(pred)) - 1),
        "thresholds": list(THRESHOLDS),
        "runs": RUNS,
        "median_s": statistics.median(times),
        "times_s": times,
        "f1": [round(float(v), 4) for v in f1],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"match_counts {result['image_shape']} n_gt={result['n_gt']} n_pred={result['n_pred']} "
        f"x{len(THRESHOLDS)} thresholds: median {result['median_s'] * 1e3:.1f} ms over {RUNS} runs"
    )
    out = Path(__file__).resolve().parent / "results" / "matching.json"
    write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
