"""Train, score and package the starting models that cganseg ships (issue 29).

One reproducible recipe per shipped model (``MODELS``): the permissively licensed sets it learns
from, each cut by a seeded split into training, validation and test images (the test images of
every set are never trained on), one ``cganseg train-seg`` run with Cellpose-style flows and
cell-size rescaling (``--cell-diameter``: every training image is rescaled so its cells have
that diameter, and ``segment`` rescales a user's images the same way, so one model serves
several magnifications), then:

- **scores** on each set's held-out test images, zero-shot as a user would run it: at the
  training images' median diameter (``segment``'s default), at ``--diameter auto`` and at the
  test images' true median diameter (a user who states the cells' size);
- **the package files**: the best checkpoint's segmenter in half precision (the optimizer and
  training state dropped) as ``src/cganseg/pretrained/NAME.pt``, and its card
  ``src/cganseg/pretrained/NAME.json`` (data and licenses, recipe, seed, CPU-hours, scores,
  SHA-256 of the weights, limits) that :mod:`cganseg.pretrained` reads.

``--leave-out SET`` trains the same recipe without one of its sets, as
``NAME_without_SET`` (never packaged): the start model of benchmarks/fewshot.py's arms on that
set, which must not have seen any of its images; it is scored on the left-out set's test images
only (its honest zero-shot score) and kept as ``benchmarks/starts/NAME_without_SET.pt`` (in the
repository: the curve can then grow without retraining it).

The runs live in ``--work`` (default ``benchmarks/.work/start_models``); an interrupted run is
resumed (``train-seg --resume``), a finished one is not run again. Scores also go to
``benchmarks/results/start_models.json``. ``--rescore`` trains nothing: it scores the shipped
files again and updates their cards' scores (after a change to how ``segment`` works). From the
repository root (needs ``../shared/data``)::

    .venv/bin/python benchmarks/start_models.py --models nuclei [--iterations 6000]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cganseg.checkpoint import load_checkpoint, save_checkpoint, shipped_payload
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_image, read_labels
from cganseg.data.rescale import cell_diameter
from cganseg.data.splits import make_split
from cganseg.evaluation.evaluate import evaluate_pairs
from cganseg.inference.segment import load_segmenter, prepare_image
from cganseg.options import SegTrainConfig
from cganseg.runtime.atomic import write_text
from cganseg.training.seg_trainer import train_segmenter
from cganseg.training.settings import resolve

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PACKAGE = ROOT / "src" / "cganseg" / "pretrained"


@dataclass(frozen=True)
class DataSet:
    """One training set of a shipped model: its folder in ../shared/data, its license (as its
    README states it) and how often each of its training images is listed (small sets of an
    unusual modality are repeated so that every step does not draw only the big sets)."""

    name: str
    license: str
    repeat: int = 1


@dataclass(frozen=True)
class Recipe:
    """What one shipped model is and how it is trained (the train-seg options given)."""

    title: str
    sets: tuple[DataSet, ...]
    cell_diameter: float
    iterations: int
    intended_use: str
    limits: str
    model: str = "unet"
    width: int = 16
    crop: int = 128
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    test_fraction: float = 0.15
    val_fraction: float = 0.05
    #: a bundled image like its training images, inside the package (an export's test image)
    sample: str | None = None
    license: str = "CC0-1.0"
    license_why: str = ("the weights are trained only on CC0 data; we waive our rights as the "
                        "data's authors did (crediting DSB2018 / BBBC038 is asked, not required)")


_CC0 = "CC0 1.0 (Data Science Bowl 2018, BBBC038 of the Broad Bioimage Benchmark Collection)"
MODELS: dict[str, Recipe] = {
    "nuclei": Recipe(
        title="Nuclei in fluorescence, stained tissue (H&E, gray) and brightfield images",
        sets=(DataSet("dsb2018_fluo_256", _CC0), DataSet("dsb2018_fluo_other", _CC0),
              DataSet("dsb2018_histo_rgb", _CC0, repeat=2),
              DataSet("dsb2018_brightfield_gray", _CC0, repeat=6)),  # fmt: skip
        cell_diameter=17.0,  # Cellpose's nuclei diameter
        iterations=6000,
        sample="demo_data/images/245b995878370ef4.png",  # in none of its training images
        intended_use="zero-shot segmentation of nuclei in 2-D images (gray or RGB, which it "
        "averages to gray), and the start for fine-tuning on a few annotated images of your "
        "own (`train-seg --init nuclei`)",
        limits="trained on 2-D DSB2018 images only (mostly cultured cells in fluorescence); "
        "tissue sections, 3-D stacks, very dense or very large nuclei and other modalities "
        "are outside what it saw: fine-tune on a few of your images. segment measures the "
        "nuclei's size itself (`--diameter auto`, its default); give `--diameter PX` when you "
        "know it",
    ),
    "cells": Recipe(
        title="Whole adherent cells in phase-contrast images",
        sets=(DataSet("usiigaci_phase", "MIT (Usiigaci, Tsai et al. 2019; Copyright (c) 2018 "
                      "Okinawa Institute of Science and Technology Graduate University)"),),
        cell_diameter=30.0,  # Cellpose's cell diameter
        iterations=6000,
        sample="pretrained/samples/usiigaci_set03.png",  # a crop of set03, in its test part
        intended_use="zero-shot segmentation of whole cells in 2-D phase-contrast images, and "
        "the start for fine-tuning on a few annotated images of your own (`train-seg --init "
        "cells`)",
        limits="trained on one phase-contrast set (T98G / NIH-3T3 cells, 10x, one microscope, "
        "28 training images): other cell types, modalities and magnifications are outside what "
        "it saw; fine-tune on a few of your images; give `--diameter PX` when you know the "
        "cells' size (else `auto`, the default)",
        license="MIT",
        license_why="the weights are trained only on usiigaci_phase, MIT-licensed: they are "
        "released under the MIT license with its copyright notice (Okinawa Institute of "
        "Science and Technology Graduate University, 2018), kept in this card",
    ),
}
#: images of one set that show the same field (at other times): always on one side of a split
SAME_FIELD = {"usiigaci_phase": {"set40": "set23"}}


def _names(folder: Path) -> list[str]:
    return [p.name for p in find_pairs(folder)]


def set_split(set_name: str, recipe: Recipe) -> dict[str, list[str]]:
    """One set's own seeded split (names in ../shared/data/SET): its test part is held out of
    every model of this recipe, and is the test part of benchmarks/fewshot.py."""
    split = make_split(_names(SHARED / set_name), val_fraction=recipe.val_fraction,
                       test_fraction=recipe.test_fraction, seed=recipe.seed)  # fmt: skip
    for name, kept_with in SAME_FIELD.get(set_name, {}).items():
        part = next(p for p, names in split.items() if kept_with in names)
        for names in split.values():
            if name in names:
                names.remove(name)
        split[part] = sorted([*split[part], name])
    return split


def prepare(name: str, recipe: Recipe, work: Path) -> tuple[Path, dict[str, dict[str, list]]]:
    """The training folder of ``name`` (links to the sets' files, named SET__IMAGE) and its
    split; returns the folder and each set's own split (names without the prefix)."""
    data = work / name / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    (data / "masks").mkdir(parents=True, exist_ok=True)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    per_set = {}
    for ds in recipe.sets:
        src = SHARED / ds.name
        own = per_set[ds.name] = set_split(ds.name, recipe)
        for part, names in own.items():
            for stem in names:
                copies = ds.repeat if part == "train" else 1
                for k in range(copies):
                    linked = f"{ds.name}__{stem}" + (f"__copy{k}" if k else "")
                    for sub in ("images", "masks"):
                        link = data / sub / f"{linked}.png"
                        if not link.exists():
                            link.symlink_to(src / sub / f"{stem}.png")
                    split[part].append(linked)
    write_text(data / "split.json", json.dumps(split, indent=1))
    return data, per_set


def train(name: str, recipe: Recipe, data: Path, work: Path) -> dict[str, Any]:
    """Run (or resume, or skip when finished) the train-seg run of ``name`` in this process;
    its summary, with the CPU-seconds spent (this process and its data workers, summed over
    resumed pieces)."""
    run = work / name / "run"
    done = run / "start_model_summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    given = {"data": str(data), "out": str(run), "split_file": str(data / "split.json"),
             "channels": "gray", "instances": "flows", "model": recipe.model,
             "width": recipe.width, "crop": [recipe.crop, recipe.crop],
             "batch_size": recipe.batch_size, "iterations": recipe.iterations, "lr": recipe.lr,
             "cell_diameter": recipe.cell_diameter, "seed": recipe.seed, "patience": 0,
             "val_every": 500}  # fmt: skip
    resume = (run / "last.pt").is_file()
    cfg = resolve(SegTrainConfig, given, new_run=not resume)
    pieces = run / "cpu_seconds.json"
    earlier = json.loads(pieces.read_text())["cpu_s"] if pieces.is_file() else 0.0
    before = _cpu_seconds()
    try:
        summary = train_segmenter(cfg, resume=resume, progress=True, given=given)
    finally:  # an interrupted piece counts too
        spent = earlier + _cpu_seconds() - before
        write_text(pieces, json.dumps({"cpu_s": spent}))
    summary["cpu_s"] = spent
    summary["best_step"] = _best_step(run / "metrics.csv")
    write_text(done, json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def _best_step(metrics: Path) -> int | None:
    """The step whose validation F1@0.5 was best (the first of equals, as best.pt keeps)."""
    with metrics.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_f1_iou50")]
    if not rows:
        return None
    best = max(rows, key=lambda r: (float(r["val_f1_iou50"]), -int(r["step"])))
    return int(best["step"])


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the data workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def score(checkpoint: Path, per_set: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Each set's test images segmented by ``checkpoint`` at three diameters (module doc);
    pooled and per-image F1@0.5, mean F1 over IoU 0.5:0.95, Dice."""
    seg = load_segmenter(checkpoint, "cpu")
    out: dict[str, Any] = {}
    for set_name, split in per_set.items():
        folder = SHARED / set_name
        images = [read_image(folder / "images" / f"{n}.png", seg.channels) for n in split["test"]]
        truths = [read_labels(folder / "masks" / f"{n}.png") for n in split["test"]]
        true_d = float(np.median([cell_diameter(t) for t in truths]))
        rows = {}
        for label, diameter in (("train_median", seg.post.train_diameter), ("auto", "auto"),
                                ("true", true_d)):  # fmt: skip
            pairs = []
            for stem, image, truth in zip(split["test"], images, truths, strict=True):
                chw = prepare_image(seg, image, stem, diameter)
                pairs.append((stem, truth, seg.segment(chw, 512, diameter=diameter)))
            rep = evaluate_pairs(pairs)
            rows[label] = {
                "f1_iou50_pooled": rep["pooled"]["f1"][0],
                "f1_iou50_per_image": rep["per_image"]["f1"][0],
                "mean_f1_per_image": float(np.mean(rep["per_image"]["f1"])),
                "dice": rep["dice"],
            }
        out[set_name] = {"n_test": len(split["test"]), "true_median_diameter": true_d, **rows}
        print(f"{set_name:26s} n={len(split['test']):3d} " + "  ".join(
            f"{k} {v['f1_iou50_pooled']:.3f}/{v['mean_f1_per_image']:.3f}"
            for k, v in rows.items()))  # fmt: skip
    return out


#: the leave-one-set-out starts, kept in the repository (each costs ~1 CPU-hour to train)
STARTS_DIR = ROOT / "benchmarks" / "starts"


def keep_start(name: str, run: Path) -> Path:
    """Write ``run``'s best.pt as a leave-one-set-out start of benchmarks/fewshot.py: what the
    package would ship (the segmenter alone, ``default_diameter`` auto) but in float32, so that
    fine-tuning from it is the same whether the run folder or this file is at hand."""
    path = STARTS_DIR / f"{name}.pt"
    save_checkpoint(path, shipped_payload(load_checkpoint(run / "best.pt"), half=False))
    return path


def package(name: str, recipe: Recipe, run: Path, scores: dict[str, Any],
            per_set: dict[str, dict[str, list]]) -> Path:  # fmt: skip
    """Write the half-precision segmenter of ``run``'s best.pt and its card into the package."""
    PACKAGE.mkdir(parents=True, exist_ok=True)
    weights = PACKAGE / f"{name}.pt"
    save_checkpoint(weights, shipped_payload(load_checkpoint(run / "best.pt")))
    summary = json.loads((run / "start_model_summary.json").read_text())
    card = {
        "name": name,
        "title": recipe.title,
        "file": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "license": recipe.license,
        "license_why": recipe.license_why,
        "training_data": [{"set": ds.name, "license": ds.license,
                           "train": len(per_set[ds.name]["train"]),
                           "val": len(per_set[ds.name]["val"]),
                           "test": len(per_set[ds.name]["test"]),
                           "repeated": ds.repeat} for ds in recipe.sets],  # fmt: skip
        "recipe": {"command": "python benchmarks/start_models.py --models " + name,
                   "model": recipe.model, "width": recipe.width, "instances": "flows",
                   "channels": "gray", "cell_diameter": recipe.cell_diameter,
                   "crop": recipe.crop, "batch_size": recipe.batch_size, "lr": recipe.lr,
                   "iterations": recipe.iterations, "seed": recipe.seed,
                   "best_step": summary.get("best_step"),
                   "best_val_f1_iou50": summary.get("best_val_f1_iou50")},  # fmt: skip
        "cpu_hours": round(summary["cpu_s"] / 3600, 2),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
        "intended_use": recipe.intended_use,
        "limits": recipe.limits,
        **({"sample": recipe.sample} if recipe.sample else {}),
        "scores": scores,
        "scores_note": "held-out test images of each set (never trained on), zero-shot; "
        "train_median: segment's default diameter; auto: --diameter auto; true: the test "
        "images' median diameter given",
    }
    write_text(PACKAGE / f"{name}.json", json.dumps(card, indent=1) + "\n")
    return weights


def rescore(name: str, recipe: Recipe) -> dict[str, Any]:
    """The shipped ``NAME.pt`` scored again on its sets' test images; its card's scores
    replaced (the weights, their checksum and the rest of the card stay)."""
    scores = score(PACKAGE / f"{name}.pt", {ds.name: set_split(ds.name, recipe)
                                            for ds in recipe.sets})  # fmt: skip
    card_path = PACKAGE / f"{name}.json"
    card = json.loads(card_path.read_text())
    write_text(card_path, json.dumps({**card, "scores": scores}, indent=1) + "\n")
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/.work/start_models")
    parser.add_argument("--iterations", type=int, help="override the recipe's step count")
    parser.add_argument("--leave-out", metavar="SET", help="train without this set of the "
                        "recipe (NAME_without_SET, not packaged)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/start_models.json")
    parser.add_argument("--no-package", action="store_true", help="score only, write nothing "
                        "into src/cganseg/pretrained")  # fmt: skip
    parser.add_argument("--rescore", action="store_true", help="train nothing: score the "
                        "shipped NAME.pt again and update its card's scores (after a change "
                        "to how segment works)")  # fmt: skip
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"error: {SHARED} not found: the training sets live there", file=sys.stderr)
        return 2
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.models:
        recipe = MODELS[name]
        if args.iterations:
            recipe = Recipe(**{**recipe.__dict__, "iterations": args.iterations})
        left_out = None
        if args.leave_out:
            left_out = next((d for d in recipe.sets if d.name == args.leave_out), None)
            if left_out is None:
                print(f"error: {name} does not train on {args.leave_out}", file=sys.stderr)
                return 2
            recipe = Recipe(**{**recipe.__dict__,
                               "sets": tuple(d for d in recipe.sets if d != left_out)})
            name = f"{name}_without_{left_out.name}"
        if args.rescore:
            results.setdefault(name, {})["scores"] = rescore(name, recipe)
            continue
        data, per_set = prepare(name, recipe, args.work)
        if left_out is not None:  # scored on the left-out set alone: its zero-shot score
            per_set = {left_out.name: set_split(left_out.name, recipe)}
        start = time.time()
        summary = train(name, recipe, data, args.work)
        run = args.work / name / "run"
        print(f"{name}: trained ({time.time() - start:.0f} s wall this call), best step "
              f"{summary.get('best_step')}")  # fmt: skip
        scores = score(run / "best.pt", per_set)
        results[name] = {"recipe": recipe.__dict__ | {"sets": [d.__dict__ for d in recipe.sets]},
                         "scores": scores}  # fmt: skip
        if left_out is not None:
            print(f"kept {keep_start(name, run)}")
        elif not args.no_package:
            print(f"packaged {package(name, recipe, run, scores, per_set)}")
    write_text(args.out, json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
