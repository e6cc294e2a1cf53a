"""Our instances against Cellpose's: conventional training per ``--instances`` mode vs Cellpose 3
trained from scratch, at equal CPU time, on the same folds (issue 16).

The instrument of issue 16 (not a unit test), built on ``value.py``'s data sets, folds and timing:

- **ours** (``cganseg train-seg``, UNet width 16, 128 px crops, batch 4, the CPU preset's
  segmenter): ``watershed`` (3 classes), ``flows`` (Cellpose's output and loss) and
  ``flows-rescaled`` (flows, cells rescaled to Cellpose's canonical diameter: 17 px for the
  nuclei of DSB, 30 px for usiigaci's cells);
- **cellpose**: Cellpose 3's own network (CPnet, nbase 32) and training loop
  (``cellpose.train.train_seg`` with its defaults: AdamW, learning rate 0.005, batch 8, 224 px
  patches, random rotation and rescaling to its canonical diameter, images with fewer than 5
  cells left out), from random weights; cellpose 3 is a dependency of cganseg;
- **equal compute**: ``--budget-s`` CPU-seconds of training steps per run, turned into steps by
  a timing pass in this process (ours interleaved step by step as in value.py; Cellpose's step
  time from two short ``train_seg`` calls, their difference per batch), kept in ``timing.json``;
- **the same selection rule**: ~10 checkpoints per run scored on the fold's validation images by
  F1@0.5, the best one kept; then the flow post-processing thresholds of the flow recipes and of
  Cellpose are tuned on the validation images by the same grid (training/tuning.py), and the
  same code (cganseg's flow following, ``cellpose.dynamics``) makes the instances of both;
- **scores** on the fold's test images by cganseg's evaluation: F1@0.5 pooled and per image, mean
  F1 over IoU 0.5:0.95, Dice; mean +- sd over folds, a table on stdout, JSON under
  benchmarks/results/ (``--out``); ``--quick`` runs a tiny version on the bundled data.

From the repository root: ``.venv/bin/python benchmarks/peers.py [--budget-s 900]
[--sets usiigaci_phase] [--recipes flows cellpose]``. Finished runs are not run again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from value import (
    add_common_arguments,
    plan_sets,
    run_one,
    run_plans,
    run_settings,
    seconds_per_step,
)

from cganseg.data.dataset import Sample, load_samples
from cganseg.data.folders import find_pairs
from cganseg.evaluation.evaluate import evaluate_pairs, write_report
from cganseg.instances.postprocessing import PostProcessing
from cganseg.options import SegTrainConfig
from cganseg.runtime.atomic import write_text
from cganseg.training.settings import resolve
from cganseg.training.tuning import tune_thresholds

VALIDATIONS = 10
#: Cellpose's canonical diameters: nuclei 17 px, cells 30 px
DIAMETERS = {"dsb2018_fluo_256": 17.0, "usiigaci_phase": 30.0, "demo": 17.0}
_SEGMENTER = {"model": "unet", "width": 16, "n_classes": 3, "crop": [128, 128], "batch_size": 4}
_TINY = {"width": 4, "crop": [32, 32], "batch_size": 2, "num_workers": 0, "tile_size": 64}
OURS: dict[str, dict[str, Any]] = {
    "watershed": {"instances": "watershed"},
    "flows": {"instances": "flows"},
    "flows-rescaled": {"instances": "flows", "cell_diameter": "set"},
}
RECIPES = (*OURS, "cellpose")


# ------------------------------------------------------------------ ours
def our_config(name: str, args, data: Path, set_name: str, fold_dir: Path, fold: int,
               steps: int) -> SegTrainConfig:  # fmt: skip
    options = {**_SEGMENTER, **OURS[name]}
    if options.get("cell_diameter") == "set":
        options["cell_diameter"] = DIAMETERS[set_name]
    fixed = {
        "data": str(data),
        "out": str(fold_dir / f"{name}_{steps}steps"),
        "split_file": str(fold_dir / "split.json"),
        "iterations": steps,
        "val_every": max(1, steps // VALIDATIONS),
        "patience": 0,
        "seed": args.seed + fold,
        "device": "cpu",
    }
    return resolve(SegTrainConfig, {**options, **(_TINY if args.quick else {}), **fixed})


# ------------------------------------------------------------------ Cellpose 3
class CellposeOutput:
    """A trained Cellpose network as cganseg's tuning and scoring see a segmenter: ``predict``
    gives Cellpose's output (flow at 5x, cell-probability logit) at the image's size, made by
    Cellpose's own ``eval`` (its normalisation, tiling and rescaling by the training diameter)."""

    def __init__(self, model) -> None:
        self.model, self.post = model, PostProcessing("flows")  # Cellpose's defaults

    def label_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """Cells are found at the image's size, as Cellpose's ``eval`` does by default."""
        return shape[-2], shape[-1]

    def predict(self, image: np.ndarray, tile_size: int = 0,
                shape: tuple[int, int] | None = None) -> np.ndarray:  # fmt: skip
        _, flows, _ = self.model.eval(image[0], channels=[0, 0], compute_masks=False)
        return np.concatenate([flows[1], flows[2][None]]).astype(np.float32)

    def segment(self, image: np.ndarray, tile_size: int = 0) -> np.ndarray:
        return self.post.to_labels(self.predict(image))


def _cellpose_net(diameter: float):
    from cellpose import models

    return models.CellposeModel(gpu=False, pretrained_model=False, model_type=None,
                                diam_mean=diameter, nchan=2)  # fmt: skip


def _gray(samples: list[Sample]) -> list[np.ndarray]:
    if any(s.image.shape[0] != 1 for s in samples):
        raise SystemExit("the Cellpose recipe is written for one-channel images")
    return [s.image[0] for s in samples]


def cellpose_seconds_per_step(train: list[Sample], diameter: float, rounds: int) -> float:
    """CPU-seconds of one Cellpose training batch: two ``train_seg`` calls that differ only in
    their number of batches (set-up, flows included, cancels out)."""
    from cellpose import train as cp_train

    times = []
    for batches in (1, 1 + rounds):
        model = _cellpose_net(diameter)
        start = time.process_time()
        with _quiet(), tempfile.TemporaryDirectory(prefix="cellpose_timing_") as scratch:
            cp_train.train_seg(model.net, train_data=_gray(train), channels=[0, 0],
                               train_labels=[s.labels for s in train], n_epochs=1,
                               nimg_per_epoch=8 * batches, save_path=scratch,
                               min_train_masks=1)  # fmt: skip
        times.append(time.process_time() - start)
    return max(1e-3, (times[1] - times[0]) / rounds)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Cellpose logs every epoch at INFO; keep the benchmark's output to its own lines."""
    logger = logging.getLogger("cellpose")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_cellpose(run: Path, data: Path, split: dict, diameter: float, steps: int,
                 quick: bool) -> dict[str, Any]:  # fmt: skip
    """Train Cellpose for about ``steps`` batches, choose the epoch on validation, tune the
    thresholds on validation, score the test images; cached in RUN/value.json."""
    from cellpose import models
    from cellpose import train as cp_train

    done = run / "value.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    by_name = {p.name: p for p in find_pairs(data)}
    parts = {k: load_samples([by_name[n] for n in split[k]], None, False) for k in split}
    train = parts["train"]
    per_epoch = max(1, len(train) // 8)  # batches per epoch (train_seg's own epoch)
    epochs = max(1, round(steps / per_epoch))
    torch.manual_seed(0)
    np.random.seed(0)
    run.mkdir(parents=True, exist_ok=True)  # train_seg makes only RUN/models
    model = _cellpose_net(diameter)
    start = time.process_time()
    with _quiet():
        cp_train.train_seg(model.net, train_data=_gray(train), channels=[0, 0],
                           train_labels=[s.labels for s in train], n_epochs=epochs,
                           nimg_per_epoch=8 * per_epoch, save_path=str(run),
                           save_every=max(1, epochs // VALIDATIONS), save_each=True,
                           model_name="cp", min_train_masks=1 if quick else 5)  # fmt: skip
    cpu_s = time.process_time() - start
    saved = sorted((run / "models").glob("cp_epoch_*")) + [run / "models" / "cp"]
    scores = []
    for path in saved:  # the same rule as ours: best validation F1@0.5 per image
        net = models.CellposeModel(gpu=False, pretrained_model=str(path), nchan=2)
        seg = CellposeOutput(net)
        report = evaluate_pairs(((s.name, s.labels, seg.segment(s.image)) for s in parts["val"]),
                                thresholds=(0.5,))  # fmt: skip
        scores.append(report["per_image"]["f1"][0])
    best = int(np.argmax(scores))
    seg = CellposeOutput(models.CellposeModel(gpu=False, pretrained_model=str(saved[best]),
                                              nchan=2))  # fmt: skip
    tuned = tune_thresholds(seg, parts["val"], 0)
    seg.post = seg.post.replace(**{k: tuned[k] for k in seg.post.mode.threshold_grid})
    report = evaluate_pairs((s.name, s.labels, seg.segment(s.image)) for s in parts["test"])
    write_report(report, run / "test")
    i50 = [round(t, 2) for t in report["thresholds"]].index(0.5)
    result = {
        "steps": epochs * per_epoch,
        "cpu_s": cpu_s,
        "f1_50_pooled": report["pooled"]["f1"][i50],
        "f1_50_per_image": report["per_image"]["f1"][i50],
        "f1_mean_per_image": float(np.mean(report["per_image"]["f1"])),
        "dice": report["dice"],
        "n_test": report["n_images"],
        "chosen_first_validation": best == 0,
        "fid": None,
        "thresholds": tuned,
    }
    write_text(done, json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------ the benchmark
def main() -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")  # Cellpose's per-image flow bars
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, list(RECIPES), budget=900.0, rounds=5, name="peers")
    args = parser.parse_args()
    sets, budget, rounds, folds, record = run_settings(args, quick_rounds=1)

    def measure(set_name: str, data: Path, splits: list[dict], set_dir: Path,
                names: list[str]) -> dict:  # fmt: skip
        speed = {}
        if mine := [n for n in names if n in OURS]:
            probes = {n: our_config(n, args, data, set_name, set_dir / "fold_1", 0, 1)
                      for n in mine}  # fmt: skip
            speed.update(seconds_per_step(probes, rounds))
        if "cellpose" in names:
            by_name = {p.name: p for p in find_pairs(data)}
            some = load_samples([by_name[n] for n in splits[0]["train"][:16]], None, False)
            speed["cellpose"] = cellpose_seconds_per_step(some, DIAMETERS[set_name], rounds)
        return speed

    def count(name: str, budget: float, speed: dict[str, float]) -> int:
        return max(1, int(budget / speed[name]))

    plans = plan_sets(args, sets, budget, folds, measure, args.recipes, count)

    def run(set_name: str, name: str, fold: int, split: dict) -> dict[str, Any]:
        data, _, _, set_dir, _, steps = plans[set_name]
        fold_dir = set_dir / f"fold_{fold + 1}"
        if name == "cellpose":
            return run_cellpose(fold_dir / f"cellpose_{steps[name]}steps", data, split,
                                DIAMETERS[set_name], steps[name], args.quick)  # fmt: skip
        cfg = our_config(name, args, data, set_name, fold_dir, fold, steps[name])
        return {**run_one(cfg, split, "cpu"), "thresholds": _thresholds(Path(cfg.out))}

    out = args.out or Path(__file__).parent / "results" / "peers_cpu.json"
    run_plans(plans, args.recipes, run, record, out)
    return 0


def _thresholds(run: Path) -> dict[str, float] | None:
    """The flow thresholds a run chose on validation (None for the class modes)."""
    from cganseg.checkpoint import load_checkpoint

    payload = load_checkpoint(run / "best.pt")
    return PostProcessing.from_checkpoint(payload, 3, run).thresholds or None


if __name__ == "__main__":
    sys.exit(main())
