"""Peak memory and time of ``segment`` on one very large image (issue 32, item 3; not a unit test).

A synthetic fluorescence-like image of ``--size`` x ``--size`` pixels (default 8192) holds a grid
of blurred elliptic nuclei about 17 px across (the shipped ``nuclei`` model's own scale, so no
rescaling), many of them on the borders of the 2048-px regions that ``segment`` cuts a large
image into (:mod:`cganseg.inference.regions`). Each case runs in a fresh subprocess, so its peak
resident memory (``ru_maxrss``) is its own:

- ``gray``: the shipped ``nuclei`` model on the one-channel image, segmented exactly as
  ``cganseg segment nuclei IMAGE --diameter 17`` does (read from a TIFF, normalised, regions);
  scored against the known nuclei (F1@0.5, and how many true nuclei came back as more than one
  label: cells cut at region borders would);
- ``rgb``: a three-channel image (the nuclei in one channel, other channels different) through a
  three-channel UNet of the same size with random weights: memory and time only (no three-channel
  model is shipped; random weights find no cells, so flow following costs less than with real
  ones).

Peak memory includes the image itself (float32: 4 bytes per pixel and channel) and its labels.
Prints a table and writes ``benchmarks/results/big_image.json``. From the repository root::

    .venv/bin/python benchmarks/big_image.py [--size 8192] [--cases gray rgb]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the nuclei grid: centre spacing (px) and radius range; offsets put nuclei on region borders
SPACING, RADII = 32, (6.0, 9.0)


def synthetic(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, truth int32) of ``size`` x ``size``: a nucleus on every point of a
    ``SPACING`` grid, its shape drawn by ``seed``, painted block by block (bounded memory)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.int32)
    centres = np.arange(SPACING // 2, size - SPACING // 2, SPACING)
    n = len(centres)
    radii = rng.uniform(*RADII, size=(n, n, 2))
    jitter = rng.integers(-3, 4, size=(n, n, 2))
    r = int(RADII[1]) + 4
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    label = 0
    for i, cy in enumerate(centres):
        for j, cx in enumerate(centres):
            label += 1
            y, x = cy + jitter[i, j, 0], cx + jitter[i, j, 1]
            disc = (yy / radii[i, j, 0]) ** 2 + (xx / radii[i, j, 1]) ** 2 <= 1
            window = truth[y - r : y + r + 1, x - r : x + r + 1]
            window[disc] = label
    image = np.empty((size, size), np.float32)
    for top in range(0, size, 2048):  # blur and noise block by block
        lo, hi = max(0, top - 8), min(size, top + 2048 + 8)
        block = ndi.gaussian_filter((truth[lo:hi] > 0).astype(np.float32), 1.5)
        image[top : min(size, top + 2048)] = block[top - lo : top - lo + min(2048, size - top)]
    image += rng.normal(0.05, 0.02, image.shape).astype(np.float32)
    return image, truth


def run_case(case: str, size: int) -> dict[str, Any]:
    """One case, in this process: write the image, segment it as the CLI does, measure."""
    import tifffile
    import torch

    from cganseg.data.io import read_image
    from cganseg.evaluation.matching import match_instances
    from cganseg.inference.segment import Segmenter, load_segmenter, prepare_image

    image, truth = synthetic(size)
    seg = load_segmenter("nuclei", "cpu")
    if case == "rgb":
        from cganseg.models.registry import build_segmenter

        torch.manual_seed(0)
        config = seg.model.config
        net = build_segmenter(config["name"], 3, config["n_classes"], config["width"])
        seg = Segmenter(net.eval(), [0, 1, 2], seg.post, seg.device)
        image = np.stack([image, 0.5 * image[::-1], np.full_like(image, 0.1)], axis=-1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.tif"
        tifffile.imwrite(path, image)
        del image
        cpu0, wall0 = time.process_time(), time.perf_counter()
        chw = prepare_image(seg, read_image(path, seg.channels), path, 17.0)
        labels = seg.segment(chw, diameter=17.0)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    out: dict[str, Any] = {"case": case, "size": size, "channels": 3 if case == "rgb" else 1,
                           "cpu_s": cpu, "wall_s": wall, "peak_rss_gb": peak / 2**30,
                           "labels": int(labels.max())}  # fmt: skip
    if case == "gray":
        (match,) = match_instances(truth, labels, thresholds=(0.5,))
        out.update(n_true=int(truth.max()), tp_iou50=match.tp,
                   f1_50=2 * match.tp / (2 * match.tp + match.fp + match.fn),
                   true_cells_split=split_cells(truth, labels))  # fmt: skip
    return out


def split_cells(truth: np.ndarray, labels: np.ndarray) -> int:
    """True nuclei that two or more labels share (each holding over 10% of its pixels)."""
    t, p = truth.ravel(), labels.ravel()
    inside = (t > 0) & (p > 0)
    pairs, counts = np.unique(np.stack([t[inside], p[inside]]), axis=1, return_counts=True)
    sizes = np.bincount(t, minlength=int(t.max()) + 1)
    big = counts > 0.1 * sizes[pairs[0]]
    per_true = np.bincount(pairs[0][big], minlength=len(sizes))
    return int((per_true > 1).sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--cases", nargs="+", default=["gray", "rgb"], choices=["gray", "rgb"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/big_image.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a subprocess's own case
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.size)))
        return 0
    rows = []
    for case in args.cases:
        proc = subprocess.run([sys.executable, __file__, "--one", case, "--size", str(args.size)],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{case:5s} {r['size']}x{r['size']}x{r['channels']}: peak {r['peak_rss_gb']:.2f} GB,"
              f" {r['cpu_s']:.0f} CPU-s ({r['wall_s']:.0f} s wall), {r['labels']} labels"
              + (f", F1@0.5 {r['f1_50']:.3f} of {r['n_true']} nuclei, "
                 f"{r['true_cells_split']} split" if "f1_50" in r else ""), flush=True)  # fmt: skip
    record = {"machine": platform.processor() or platform.machine(), "cpu_count": _cpus(),
              "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
