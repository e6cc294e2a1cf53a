"""Does cGAN-Seg pay off? Each training recipe at equal compute, on real data, over folds.

The instrument of issues 15 and 17 (not a unit test). For every data set, fold and recipe it
trains one run with the same budget of training CPU-seconds, chooses the checkpoint on
validation only, and scores it once on the fold's test part:

- **recipes** (``RECIPES``), all with the same segmenter (UNet width 16, 3 classes, 128 px
  crops, batch 4: the CPU preset): ``conventional`` (``cganseg train-seg``) and ``cgan``
  (``cganseg train --preset cpu``), the default pair; issue 17's levers one at a time
  (``cgan-ramp``: Id-only warm-up for 20% of the steps, then the cycle and adversarial weights
  ramp up over 30%; ``cgan-extra``: 3 extra Id_S updates per step; ``cgan-ema``: Seg's moving
  average, decay 0.99; ``cgan-init``: half the budget trains ``conventional`` first, whose
  best.pt starts Seg; ``cgan-betas``: Seg's Adam betas 0.9, 0.999; ``cgan-cheap``: the
  perceptual loss on 3 VGG blocks at half resolution), ``cgan-lr`` (the paper's recipe with
  Seg's learning rate 1e-3, train-seg's: is the in-loop segmenter's 2e-4 why the paper recipe
  fails in some folds?), ``cgan-all`` (every lever) and the
  controls ``cgan-zero`` and ``cgan-all-zero`` (the same with every synthetic-cycle and
  adversarial weight at 0: a gain over them comes from the generator, not from extra segmenter
  steps or a warm start);
- ``NAME-flows`` (``conventional``, ``cgan``, ``cgan-all``, ``cgan-all-zero``): the same recipe
  with cells made by Cellpose-style flows instead of the 3-class watershed (train-seg's default
  output since issue 16), pre-trained by ``conventional-flows``;
- **data**: ``dsb2018_fluo_256`` (200 training pairs per fold) and ``usiigaci_phase`` (each
  1022x1024 image cut into 4 tiles, tiles of one image always on one side of a split), from
  ../shared/data; ``demo`` is the bundled data (for ``--quick``);
- **equal compute**: ``--budget-s`` CPU-seconds of training steps per run. A short interleaved
  timing pass (recipes alternate step by step, in this process, before any run) gives each
  recipe's median seconds per step, and the budget becomes a step count per recipe, so runs stay
  seeded and repeatable whatever else the machine does later (kept in ``timing.json``). CPU time
  of this process, all threads: run the timing on a quiet machine, as OpenMP threads that spin
  on an oversubscribed machine inflate it. Data loading (worker processes), validation and the
  final test evaluation are not counted; a recipe's pre-training would be;
- **folds**: k-fold over groups (images or source images) with ``--folds`` (default 3); within a
  fold, 10% of the remaining groups validate, ``n_train`` pairs train;
- **scores** on the test part: F1@0.5 pooled and per image, mean F1 over IoU 0.5:0.95 (per image),
  Dice; for cGAN-Seg also the FID of images generated from the test masks against the real test
  images (needs `cganseg fetch-weights fid-inception`), by the generator of the chosen checkpoint
  (``fid``: best.pt, chosen by the segmenter's validation score) and of the last step
  (``fid_last``: the generator's own training, whatever step the segmenter peaked at); and how
  often the chosen checkpoint is the first validation.

Prints a table of mean +- sd per data set and recipe, writes ``benchmarks/results/value_cpu.json``
(``--out``). Runs live in ``--work`` (default ``benchmarks/.work/value``); a finished run is not
run again, so an interrupted benchmark goes on where it stopped; ``--finished-only`` trains
nothing and reports the runs finished so far (their number in the table's last column). From
the repository root:
``.venv/bin/python benchmarks/value.py [--budget-s 1200] [--sets dsb2018_fluo_256]
[--recipes conventional cgan cgan-ramp ...]``;
``--quick`` runs a tiny version on the bundled data in about a minute (CI runs it).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cganseg.data.dataset import load_samples
from cganseg.data.folders import find_pairs
from cganseg.data.io import read_image, read_labels, write_image, write_labels
from cganseg.data.splits import kfold_indices, save_split
from cganseg.demo import demo_data_dir
from cganseg.errors import InputError
from cganseg.evaluation.fid import HeldOutFid
from cganseg.inference.generate import load_generator
from cganseg.models.fid_inception import load_fid_features
from cganseg.options import CGanTrainConfig, SegTrainConfig, preset_recipe
from cganseg.runtime.atomic import write_text
from cganseg.runtime.device import resolve_device
from cganseg.training.cgan_trainer import CGanTrainer, train_cgan
from cganseg.training.seg_trainer import SegTrainer, train_segmenter
from cganseg.training.settings import resolve

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
N_TRAIN = 200
VALIDATIONS = 10  # per run, evenly spaced


@dataclass(frozen=True)
class Recipe:
    """A way to train the segmenter: its config class, options, options of the tiny ``--quick``
    version, options set to a share of the run's steps (``{"ramp_steps": 0.3}``), and a recipe
    that first trains the segmenter for a share of the budget (``("conventional", 0.5)``: its
    best.pt starts this one, as ``--init-seg``)."""

    config: type[SegTrainConfig]
    options: dict[str, Any]
    quick: dict[str, Any] = field(default_factory=dict)
    of_steps: dict[str, float] = field(default_factory=dict)
    pretrain: tuple[str, float] | None = None

    def describe(self) -> dict[str, Any]:
        return {**self.options, **{k: f"{v:g} of the steps" for k, v in self.of_steps.items()},
                **({"pretrain": list(self.pretrain)} if self.pretrain else {})}  # fmt: skip


# the 3-class watershed for every recipe but the NAME-flows ones (train-seg's default became
# flows in issue 16; a comparison is of training, with one way of making cells on both sides)
_SEGMENTER = {"model": "unet", "width": 16, "n_classes": 3, "instances": "watershed",
              "crop": [128, 128], "batch_size": 4}  # fmt: skip
_TINY = {"width": 4, "crop": [32, 32], "batch_size": 2, "num_workers": 0, "tile_size": 64}
# the paper's recipe under the CPU sizes, whatever `train`'s preset default (issue 17) is: each
# lever is a recipe of its own here
_CGAN = {"preset": "cpu", **preset_recipe("paper"), **_SEGMENTER, "perceptual": "hed-vgg16",
         "sample_every": 0}  # fmt: skip
_CGAN_TINY = {**_TINY, "gen_width": 4, "style_dim": 8, "n_mapping": 2, "disc_width": 4,
              "disc_layers": 2, "perceptual": "none"}  # fmt: skip
#: the control of issue 17: every synthetic-cycle and adversarial weight at 0
ZERO = {"w_rec_s": 0.0, "w_rec_g": 0.0, "w_adv_g": 0.0, "w_adv_s": 0.0}
#: issue 17's levers, one at a time (value.py --recipes cgan-ramp ...)
LEVERS: dict[str, dict[str, Any]] = {
    "cgan-ramp": {"of_steps": {"warmup_gen": 0.2, "ramp_steps": 0.3}},
    "cgan-extra": {"options": {"seg_extra_updates": 3}},
    "cgan-ema": {"options": {"seg_ema": 0.99}},
    "cgan-init": {"pretrain": ("conventional", 0.5)},
    "cgan-betas": {"options": {"betas_seg": [0.9, 0.999]}},
    "cgan-cheap": {"options": {"perceptual_depth": 3, "perceptual_scale": 0.5}},
}


def _cgan(options: dict[str, Any] | None = None, of_steps: dict[str, float] | None = None,
          pretrain: tuple[str, float] | None = None) -> Recipe:  # fmt: skip
    return Recipe(CGanTrainConfig, {**_CGAN, **(options or {})}, _CGAN_TINY, of_steps or {},
                  pretrain)  # fmt: skip


def _combined(levers: list[str], zero: bool = False) -> Recipe:
    parts = [LEVERS[n] for n in levers]
    options = {k: v for part in parts for k, v in part.get("options", {}).items()}
    of_steps = {k: v for part in parts for k, v in part.get("of_steps", {}).items()}
    pretrain = next((part["pretrain"] for part in parts if "pretrain" in part), None)
    return _cgan({**options, **(ZERO if zero else {})}, of_steps, pretrain)


FLOWS_SUFFIX = "-flows"


def _with_flows(recipe: Recipe) -> Recipe:
    """The recipe making cells with Cellpose-style flows (train-seg's default since issue 16),
    pre-trained, if at all, by its first recipe with flows too."""
    pretrain = recipe.pretrain and (f"{recipe.pretrain[0]}{FLOWS_SUFFIX}", recipe.pretrain[1])
    return replace(recipe, options={**recipe.options, "instances": "flows"}, pretrain=pretrain)


_WATERSHED: dict[str, Recipe] = {
    "conventional": Recipe(SegTrainConfig, {**_SEGMENTER}, _TINY),
    "cgan": _cgan(),
    "cgan-zero": _cgan(ZERO),
    **{name: _combined([name]) for name in LEVERS},
    # not a lever of issue 17 (`--lr` was always there), a diagnosis: train-seg's learning rate
    "cgan-lr": _cgan({"lr": SegTrainConfig.lr}),
    "cgan-all": _combined(list(LEVERS)),
    "cgan-all-zero": _combined(list(LEVERS), zero=True),
}
#: every recipe with the watershed, and the default pair and the combination with flows
RECIPES: dict[str, Recipe] = {
    **_WATERSHED,
    **{name + FLOWS_SUFFIX: _with_flows(_WATERSHED[name])
       for name in ("conventional", "cgan", "cgan-all", "cgan-all-zero")},
}  # fmt: skip
#: what runs without --recipes: issue 15's comparison
DEFAULT_RECIPES = ["conventional", "cgan"]
TRAINERS = {
    SegTrainConfig: (SegTrainer, train_segmenter),
    CGanTrainConfig: (CGanTrainer, train_cgan),
}


# ------------------------------------------------------------------ data sets and folds
def _usiigaci_tiles(work: Path) -> Path:
    """usiigaci_phase with each image cut into 2x2 tiles (NAME_tK), written once."""
    out = work / "data" / "usiigaci_phase_tiles"
    if (out / "done").is_file():
        return out
    for pair in find_pairs(SHARED / "usiigaci_phase"):
        image, labels = read_image(pair.image), read_labels(pair.mask)
        h, w = labels.shape
        for k, (ys, xs) in enumerate(
            (ys, xs) for ys in (slice(0, h // 2), slice(h // 2, h))
            for xs in (slice(0, w // 2), slice(w // 2, w))
        ):  # fmt: skip
            tile = image[:, ys, xs]
            write_image(out / "images" / f"{pair.name}_t{k}.tif", tile[0] if len(tile) == 1
                        else np.moveaxis(tile, 0, -1))  # fmt: skip
            write_labels(out / "masks" / f"{pair.name}_t{k}.tif", labels[ys, xs])
    write_text(out / "done", "")
    return out


def data_set(name: str, work: Path) -> tuple[Path, dict[str, str]]:
    """The data folder of a set and each pair's group (pairs of a group stay together)."""
    if name == "demo":
        folder = demo_data_dir()
    elif name == "usiigaci_phase":
        folder = _usiigaci_tiles(work)
    else:
        folder = SHARED / name
    if not folder.is_dir():
        raise InputError("data set not found (../shared/data is needed)", folder)
    names = [p.name for p in find_pairs(folder)]
    groups = {n: n.rsplit("_t", 1)[0] if name == "usiigaci_phase" else n for n in names}
    return folder, groups


def fold_splits(groups: dict[str, str], k: int, seed: int, n_train: int | None) -> list[dict]:
    """k folds over groups: test = one part; of the rest, 10% of groups validate and the first
    ``n_train`` pairs (seeded order) train."""
    keys = sorted(set(groups.values()))
    splits = []
    for i, (rest_idx, test_idx) in enumerate(kfold_indices(len(keys), k, seed)):
        rng = np.random.default_rng(seed * 1000 + i)
        rest = [keys[j] for j in rng.permutation(rest_idx)]
        n_val = max(1, round(0.1 * len(rest)))
        val_groups, test_groups = set(rest[:n_val]), {keys[j] for j in test_idx}
        train = [n for n in sorted(groups) if groups[n] not in val_groups | test_groups]
        train = [train[j] for j in rng.permutation(len(train))][:n_train]
        splits.append(
            {
                "train": sorted(train),
                "val": sorted(n for n in groups if groups[n] in val_groups),
                "test": sorted(n for n in groups if groups[n] in test_groups),
            }
        )
    return splits


# ------------------------------------------------------------------ equal compute
def run_config(name: str, args: argparse.Namespace, data: Path, set_dir: Path, fold: int,
               steps: int, init_seg: Path | None = None) -> SegTrainConfig:  # fmt: skip
    """Recipe ``name``'s config for one fold of a set, trained for ``steps`` steps."""
    recipe = RECIPES[name]
    fold_dir = set_dir / f"fold_{fold + 1}"
    fixed = {
        "data": str(data),
        "out": str(fold_dir / f"{name}_{steps}steps"),  # another budget is another run
        "split_file": str(fold_dir / "split.json"),
        "iterations": steps,
        "val_every": max(1, steps // VALIDATIONS),
        "patience": 0,
        "seed": args.seed + fold,
        "device": args.device,
        **{k: int(share * steps) for k, share in recipe.of_steps.items()},
        **({"init_seg": str(init_seg)} if init_seg else {}),
    }
    quick = recipe.quick if args.quick else {}
    return resolve(recipe.config, {**recipe.options, **quick, **fixed})


def recipe_steps(name: str, budget: float, speed: dict[str, float]) -> dict[str, int]:
    """Steps of recipe ``name`` for ``budget`` CPU-seconds, and of its pre-training if any
    (``{"steps": N}`` or ``{"steps": N, "pretrain": M}``)."""
    pretrain = RECIPES[name].pretrain
    if pretrain is None:
        return {"steps": max(1, int(budget / speed[name]))}
    first, share = pretrain
    return {"steps": max(1, int((1 - share) * budget / speed[name])),
            "pretrain": max(1, int(share * budget / speed[first]))}  # fmt: skip


def seconds_per_step(cfgs: dict[str, SegTrainConfig], rounds: int) -> dict[str, float]:
    """Median seconds per training step of each recipe, steps interleaved across recipes."""
    trainers = {name: TRAINERS[type(cfg)][0].from_config(cfg) for name, cfg in cfgs.items()}
    batches = {name: iter(t.loader()) for name, t in trainers.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(rounds + 1):  # round 0 warms up
        for name, trainer in trainers.items():
            images, targets = next(batches[name])
            start = time.process_time()
            trainer.train_step(images, targets)
            if r:
                times[name].append(time.process_time() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# ------------------------------------------------------------------ one run
def _chosen_is_first_validation(run: Path) -> bool:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_f1_iou50")]
    scores = [float(r["val_f1_iou50"]) for r in rows]
    return bool(scores) and int(np.argmax(scores)) == 0


#: the generator each FID is of: the chosen checkpoint (best.pt, by the segmenter's validation
#: score) and the last step (the generator's own training)
FID_CHECKPOINTS = {"fid": "best.pt", "fid_last": "last.pt"}


def _fids(run: Path, data: Path, test: list[str], device: str,
          keys: list[str]) -> dict[str, float | None]:  # fmt: skip
    """FID (``FID_CHECKPOINTS[key]`` for each key) of the images the run's generator makes from
    the test masks, against the real test images; None when the FID network is not fetched."""
    dev = resolve_device(device)
    try:
        extractor = load_fid_features(None, dev)
    except InputError:
        return dict.fromkeys(keys)  # the FID network is not fetched: said in the output
    by_name = {p.name: p for p in find_pairs(data)}
    held_out = HeldOutFid(load_samples([by_name[n] for n in test], None, False), extractor, dev)
    out: dict[str, float | None] = {}
    for key in keys:
        gen = load_generator(run / FID_CHECKPOINTS[key], device)
        out[key] = float(held_out.score(held_out.generate(gen.generate))["fid"])
    return out


def _result_file(cfg: SegTrainConfig) -> Path:
    """Where a run's test scores are cached: its presence marks a finished run."""
    return Path(cfg.out) / "value.json"


def run_one(cfg: SegTrainConfig, split: dict, device: str) -> dict[str, Any]:
    """Train (or finish) one run, then its test scores; cached in RUN/value.json."""
    run, done = Path(cfg.out), _result_file(cfg)
    if done.is_file():
        result = json.loads(done.read_text(encoding="utf-8"))
        missing = [k for k in FID_CHECKPOINTS if k not in result]  # a run of an older value.py
        if isinstance(cfg, CGanTrainConfig) and missing:
            result.update(_fids(run, Path(cfg.data), split["test"], device, missing))
            write_text(done, json.dumps(result, indent=2) + "\n")
        return result
    train = TRAINERS[type(cfg)][1]
    start = time.process_time()
    train(cfg, resume=(run / "last.pt").is_file(), progress=False,
          given={"iterations": cfg.iterations})  # fmt: skip
    report = json.loads((run / "test" / "metrics.json").read_text(encoding="utf-8"))
    i50 = [round(t, 2) for t in report["thresholds"]].index(0.5)
    result = {
        "steps": cfg.iterations,
        "cpu_s": time.process_time() - start,
        "f1_50_pooled": report["pooled"]["f1"][i50],
        "f1_50_per_image": report["per_image"]["f1"][i50],
        "f1_mean_per_image": float(np.mean(report["per_image"]["f1"])),
        "dice": report["dice"],
        "n_test": report["n_images"],
        "chosen_first_validation": _chosen_is_first_validation(run),
        **(_fids(run, Path(cfg.data), split["test"], device, list(FID_CHECKPOINTS))
           if isinstance(cfg, CGanTrainConfig) else dict.fromkeys(FID_CHECKPOINTS)),
    }  # fmt: skip
    write_text(done, json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------ the benchmark
SCORES = ("f1_50_pooled", "f1_50_per_image", "f1_mean_per_image", "dice", "fid", "fid_last")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_runs": len(runs)}
    for key in SCORES:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = {
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            }
    out["chosen_first_validation"] = sum(r["chosen_first_validation"] for r in runs)
    out["steps"] = sorted({r["steps"] for r in runs})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, list(RECIPES), budget=1200.0, rounds=7, name="value",
                         default=DEFAULT_RECIPES)  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: the table and JSON of the runs finished so far")
    args = parser.parse_args()
    sets, budget, rounds, folds, record = run_settings(args, quick_rounds=2)
    record["recipes"] = {n: RECIPES[n].describe() for n in args.recipes}

    def measure(set_name: str, data: Path, splits: list[dict], set_dir: Path,
                names: list[str]) -> dict:  # fmt: skip
        probes = {n: run_config(n, args, data, set_dir, 0, 1) for n in names}
        return seconds_per_step(probes, rounds)  # interleaved

    timed = sorted({*args.recipes, *(RECIPES[n].pretrain[0] for n in args.recipes
                                     if RECIPES[n].pretrain)})  # fmt: skip
    plans = plan_sets(args, sets, budget, folds, measure, timed, recipe_steps)

    def run(set_name: str, name: str, fold: int, split: dict) -> dict[str, Any] | None:
        data, _, _, set_dir, _, steps = plans[set_name]
        init, cpu_before = None, 0.0
        if "pretrain" in steps[name]:  # its CPU time counts in the recipe's budget
            first = RECIPES[name].pretrain[0]
            cfg = run_config(first, args, data, set_dir, fold, steps[name]["pretrain"])
            if args.finished_only and not _result_file(cfg).is_file():
                return None
            cpu_before = run_one(cfg, split, args.device)["cpu_s"]
            init = Path(cfg.out)
        cfg = run_config(name, args, data, set_dir, fold, steps[name]["steps"], init)
        if args.finished_only and not _result_file(cfg).is_file():
            return None
        result = run_one(cfg, split, args.device)
        return {**result, "cpu_s": result["cpu_s"] + cpu_before,
                **({"pretrain_steps": steps[name]["pretrain"]} if init else {})}  # fmt: skip

    out = args.out or Path(__file__).parent / "results" / "value_cpu.json"
    run_plans(plans, args.recipes, run, record, out)
    return 0


def run_settings(args: argparse.Namespace, quick_rounds: int) -> tuple:
    """Sets, budget, timing rounds and folds of a run (``--quick``: the demo data, 3 CPU-s, 2
    folds), and the record its JSON starts from (shared with peers.py)."""
    sets = args.sets or (["demo"] if args.quick else ["dsb2018_fluo_256", "usiigaci_phase"])
    budget, rounds = (3.0, quick_rounds) if args.quick else (args.budget_s, args.timing_rounds)
    folds = 2 if args.quick else args.folds
    record: dict[str, Any] = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "budget": f"{budget:g} training CPU-seconds per run (validation and testing not counted)",
        "folds": folds,
        "sets": {},
    }
    return sets, budget, rounds, folds, record


def plan_sets(args: argparse.Namespace, sets: list[str], budget: float, folds: int, measure,
              timed: list[str], count) -> dict[str, tuple]:  # fmt: skip
    """Per set: its data, groups, fold splits (saved), folder, seconds per step and steps for
    ``budget``. Every set's timing pass comes first, while the machine is quiet; its result is
    kept in ``timing.json`` so a resumed benchmark keeps its step counts, and only recipes
    missing there are timed (``measure(set, data, splits, folder, names)``), so adding a recipe
    later leaves the finished runs' step counts as they were. A later pass runs on a machine
    that may be slower or faster than the first one (the same recipe measured 0.31 and 0.53
    CPU-s per step in two sessions): it times the fastest recipe already kept beside the missing
    ones, and their speeds are scaled by that reference's kept/now ratio, so every recipe's
    steps stay in the proportion of one pass. ``timed``: the recipes that need a speed;
    ``count(name, budget, speed)``: a recipe's steps."""
    plans = {}
    for set_name in sets:
        data, groups = data_set(set_name, args.work)
        splits = fold_splits(groups, folds, args.seed, None if set_name == "demo" else N_TRAIN)
        set_dir = args.work / ("quick" if args.quick else "full") / set_name
        for i, split in enumerate(splits):
            save_split(set_dir / f"fold_{i + 1}" / "split.json", split)
        timing = set_dir / "timing.json"
        speed = json.loads(timing.read_text(encoding="utf-8")) if timing.is_file() else {}
        missing = [n for n in timed if n not in speed]
        if missing:
            speed.update(timed_against_kept(
                speed, missing, functools.partial(measure, set_name, data, splits, set_dir)))
            write_text(timing, json.dumps(speed) + "\n")
        steps = {n: count(n, budget, speed) for n in args.recipes}
        print(f"{set_name}: s/step {speed}, steps {steps} for {budget:g} CPU-s", flush=True)
        plans[set_name] = (data, groups, splits, set_dir, speed, steps)
    return plans


def timed_against_kept(kept: dict[str, float], missing: list[str],
                       measure) -> dict[str, float]:  # fmt: skip
    """Seconds per step of the ``missing`` recipes (``measure(names)`` times names in one
    interleaved pass), on the scale of the ``kept`` ones: the fastest kept recipe is timed in
    the same pass and the new speeds are multiplied by its kept/now ratio."""
    if not kept:
        return measure(missing)
    reference = min(kept, key=kept.__getitem__)
    now = measure([reference, *missing])
    scale = kept[reference] / now[reference]
    print(f"timing: {reference} {now[reference]:.3f} s/step now, {kept[reference]:.3f} kept; "
          f"new recipes scaled by {scale:.3f}", flush=True)  # fmt: skip
    return {n: now[n] * scale for n in missing}


def add_common_arguments(parser: argparse.ArgumentParser, recipes: list[str], *, budget: float,
                         rounds: int, name: str,
                         default: list[str] | None = None) -> None:  # fmt: skip
    """The options value.py and peers.py share; ``name`` names the work folder and the JSON."""
    parser.add_argument("--sets", nargs="+", default=None,
                        help="dsb2018_fluo_256, usiigaci_phase, demo (default: the first two)")
    parser.add_argument("--recipes", nargs="+", choices=recipes, default=default or recipes,
                        help=f"default: {' '.join(default or recipes)}")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=budget,
                        help=f"training CPU-seconds per run (default {budget:g})")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-rounds", type=int, default=rounds)
    parser.add_argument("--quick", action="store_true", help="tiny networks on the demo data")
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / ".work" / name)
    parser.add_argument("--out", type=Path,
                        help=f"JSON (default benchmarks/results/{name}_cpu.json)")  # fmt: skip


def run_plans(plans: dict[str, tuple], recipes: list[str], run, record: dict[str, Any],
              out: Path) -> None:  # fmt: skip
    """Every fold of every planned set, each recipe through ``run(set, recipe, fold, split)``
    (None: a run left out, as by ``--finished-only``); then the summaries, the table and the
    JSON ``out`` (shared with peers.py)."""
    for set_name, (_, groups, splits, _, speed, _) in plans.items():
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in recipes}
        for fold, split in enumerate(splits):
            for name in recipes:
                result = run(set_name, name, fold, split)
                if result is None:
                    continue
                runs[name].append(result)
                print(f"  {set_name} fold {fold + 1} {name}: {json.dumps(result)}", flush=True)
        record["sets"][set_name] = {
            "n_pairs": len(groups),
            "s_per_step": speed,
            "runs": runs,
            "summary": {n: summarise(r) for n, r in runs.items()},
        }
    _print_table(record)
    write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def _print_table(record: dict[str, Any]) -> None:
    print(f"\n{record['budget']}, {record['folds']} folds; mean +- sd over folds")
    head = f"{'set':<18}{'recipe':<14}{'steps':<12}" + "".join(f"{k:<20}" for k in SCORES)
    print(head + "chosen=first val")
    for set_name, entry in record["sets"].items():
        for name, summ in entry["summary"].items():
            cells = "".join(
                f"{summ[k]['mean']:.3f} +- {summ[k]['sd']:.3f}".ljust(20) if k in summ
                else "-".ljust(20) for k in SCORES
            )  # fmt: skip
            steps = ",".join(map(str, summ["steps"]))
            print(f"{set_name:<18}{name:<14}{steps:<12}{cells}"
                  f"{summ['chosen_first_validation']}/{summ['n_runs']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
