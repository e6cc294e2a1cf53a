"""What flow targets cost per training step: made per crop vs made once per image and moved.

Issue 32, item 1. Since flows became the default, every augmented crop ran Cellpose's
``masks_to_flows`` (``InstanceMode.targets`` on the crop's mask); now the trainer makes each
training image's flows once (:func:`cganseg.data.dataset.make_image_targets`) and every crop
moves them with its augmentation (:meth:`cganseg.data.augment.ConventionalAugment.move_field`),
making again only the flows of the cells on the crop's edge (they must point into the crop).

For one data set, three :class:`cganseg.data.dataset.CropDataset` paths (per crop; moved; moved
without remaking the edge's cells, as before that fix) serve the same keyed batches (crop,
batch size and augmentation of train-seg's defaults, or ``--crop``; images as they are, or
rescaled to ``--cell-diameter`` as train-seg's option does), in this process, one after the
other per round (interleaved, so the machine's noise falls on all); prints the median
CPU-seconds per batch of each, and the one-off cost of making the whole images' flows. Writes
``benchmarks/results/flow_targets.json``. From the repository root::

    .venv/bin/python benchmarks/flow_targets.py [--data ../shared/data/usiigaci_phase]
        [--crop 128 --cell-diameter 17]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cganseg.data.augment import ConventionalAugment
from cganseg.data.dataset import CropDataset, SeededSampler, load_samples, make_image_targets
from cganseg.data.folders import find_pairs
from cganseg.data.rescale import median_diameter, to_diameter
from cganseg.demo import demo_data_dir
from cganseg.instances import MODES
from cganseg.options import SegTrainConfig
from cganseg.runtime.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]


class MovedOnly(CropDataset):
    """The moved path as it was before the cells on the crop's edge were remade (their
    whole-image flows kept): what remaking them costs."""

    def _remake_cut(self, field: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
        return field


def batch_seconds(dataset: CropDataset, keys: list[tuple[int, int]]) -> float:
    """CPU-seconds of this process to serve one batch of ``keys``."""
    start = time.process_time()
    for key in keys:
        dataset[key]
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=demo_data_dir())
    parser.add_argument("--images", type=int, default=20, help="pairs loaded (the first N)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--crop", type=int, help="crop side (default: train-seg's)")
    parser.add_argument("--cell-diameter", type=float,
                        help="rescale the images so their cells are this wide, as train-seg's "
                        "--cell-diameter does (default: as they are)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/flow_targets.json")
    args = parser.parse_args()
    cfg = SegTrainConfig(data=str(args.data), out="unused")
    crop, batch = (args.crop, args.crop) if args.crop else tuple(cfg.crop), cfg.batch_size
    pairs = find_pairs(args.data)[: args.images]
    if not pairs:
        print(f"error: {args.data}: no image/mask pairs", file=sys.stderr)
        return 2
    samples = load_samples(pairs, "gray", progress=False)
    if args.cell_diameter:
        measured = median_diameter(samples)
        samples = [to_diameter(s, args.cell_diameter, measured) for s in samples]
    mode = MODES["flows"]
    mode.prepare()
    targets = functools.partial(mode.targets, n_classes=cfg.n_classes)
    targets(samples[0].labels[:crop[0], :crop[1]])  # numba's first-call work, untimed
    start = time.process_time()
    made = make_image_targets(samples, crop, targets, progress=False)
    once = time.process_time() - start
    aug = ConventionalAugment(p_vanilla=cfg.p_vanilla)
    vector = mode.image_target_vector
    paths = {"per crop": CropDataset(samples, crop, targets, aug),
             "moved": CropDataset(samples, crop, targets, aug, made, vector),
             "moved, cut cells not remade": MovedOnly(samples, crop, targets, aug, made, vector)}
    stream = iter(SeededSampler(len(samples), seed=0))
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        keys = [next(stream) for _ in range(batch)]
        for name, dataset in paths.items():
            times[name].append(batch_seconds(dataset, keys))
    medians = {name: statistics.median(t) for name, t in times.items()}
    record = {"data": str(args.data), "images": len(samples), "crop": list(crop),
              "cell_diameter": args.cell_diameter,
              "batch_size": batch, "p_vanilla": cfg.p_vanilla, "rounds": args.rounds,
              "cpu_s_per_batch_median": medians, "cpu_s_per_batch": times,
              "make_image_targets_cpu_s": once,
              "image_targets_mb": sum(m.nbytes for m in made) / 2**20,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}"}  # fmt: skip
    for name, m in medians.items():
        print(f"{name:28s}: {m * 1000:7.1f} CPU-ms per batch of {batch} crops {crop}")
    print(f"whole-image flows made once: {once:.2f} CPU-s for {len(samples)} images "
          f"({record['image_targets_mb']:.1f} MB)")
    write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
