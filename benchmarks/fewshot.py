"""The learning curve at few annotations (issue 29): zero-shot, from scratch and fine-tuned.

For each data set and each number N of annotated training images (N in ``--n``, several random
draws of the N images per N), a user's run is made as the product makes it and scored on the
same held-out test images:

- **arms**: ``zero-shot`` (the start model as it is, ``segment --diameter auto``; also at the
  start's training median), ``scratch`` (``train-seg`` from random weights) and ``finetune``
  (``train-seg --init START`` with the fine-tuning defaults, cganseg.options.FINE_TUNING);
  ``finetune-lrX-stepsN`` is the same with learning rate X and/or N steps (the defaults' check,
  e.g. ``finetune-lr0.001-steps1500``: scratch's budget, so only the start differs). Every
  trained arm has the start model's network: UNet width 16, Cellpose-style flows, gray input,
  cells rescaled to 17 px (``--cell-diameter 17``), 128 px crops, batch 8;
- **the start never saw the set it is scored on**: usiigaci_phase and murphy_nih3t3_hoechst
  start from the shipped ``nuclei`` (which saw neither); dsb2018_fluo_256 from
  ``nuclei_without_dsb2018_fluo_256`` (the same recipe without that set:
  ``benchmarks/start_models.py --models nuclei --leave-out dsb2018_fluo_256``, kept in
  ``benchmarks/starts/``);
- **a draw**: N images (usiigaci: 2x2 tiles of its 1022x1024 images, value.py's tiling) drawn
  from the set's pool by the draw's seed; the run splits them as ``train-seg`` does for a
  user (cganseg.data.splits: fewer than 10 images, no validation and the last step is kept;
  otherwise 10% validate and choose the checkpoint, the start itself included: fine-tuning's
  guard, ``best_step`` 0 when no trained step beat the start);
- ``finetune-unguarded``: fine-tuning as it was before its guard (the start not validated):
  the guard's check; the record also holds ``finetune-guard3`` (fine-tuning that validated one
  of 3 images for the guard: commit 4bd39f7's split rule, measured and reverted);
- ``...-percropflows`` (a check, not an arm of the curve): the same run with flow targets made
  per augmented crop, as before issue 32's item 1 moved each image's flows with the crop;
  equal draws of the two say whether moving them changed what the network learns;
- ``...-maskcutflows`` (a check, issue 32's candidate for flow targets with no per-crop work):
  the cells the crop's edge cuts keep no flow target at all instead of having theirs made again
  on their visible part (``CropDataset._remake_cut``): the flow loss leaves their pixels out,
  their cell probability is still trained; equal draws against ``finetune`` say whether the
  cheap targets cost the border cells what moved whole-image flows did;
- ``...-frozenbn``: fine-tuning whose BatchNorm layers stay in eval mode (they normalise with
  the start's running statistics and do not update them; their scale and shift still train):
  whether a few images' statistics, not the weights, are what lowers a good start
  (``finetune-lr1e-12-steps100``, statistics updated and weights all but unchanged, is the
  converse check);
- the record's ``finetune-startthresholds``: fine-tuning that kept the start's flow thresholds
  under 10 pairs (a product change of 2026-12-07, measured and reverted; README "Few
  annotations");
- **to a plateau**: ``scratch`` trains ``--scratch-steps`` steps (default 1500, lr 1e-3, the
  product's scratch defaults otherwise), ``finetune`` the fine-tuning defaults' 500 steps;
  each run records ``loss_fall``, how much its training loss still fell over its last fifth of
  steps (from its metrics.csv), and the table its largest per cell: a cell is at a plateau by
  the rule when that is under ``PLATEAU_FALL`` (5%);
- **test images**: dsb2018_fluo_256 the 15% test part of start_models.py's split (never seen by
  any start), usiigaci_phase the tiles of 25% of its images, murphy its 6 last-drawn images;
- **scores** per run, segmenting at the run's default diameter (a trained run's: its training
  images' median, the zero-shot start's: auto) and, for trained runs, at ``--diameter auto`` as
  well (``scores_auto``; on a set of mixed magnifications such as DSB one or three images'
  median says little of the test images'): F1@0.5 pooled and per image, mean F1 over IoU
  0.5:0.95 per image, and AP@0.5 per image (TP / (TP + FP + FN), StarDist's and the published
  curves' metric; F1 = 2 AP / (1 + AP) per image), with CPU-seconds of training (this process
  and its data workers).

Prints a table of mean +- sd per set, arm and N, writes ``benchmarks/results/fewshot.json`` and
``benchmarks/results/fewshot.png`` (F1@0.5 and mean F1 against N per set, the published DSB
curves beside). Runs live in ``--work`` (default ``benchmarks/.work/fewshot``); a finished run
is not run again, so an interrupted benchmark goes on where it stopped. ``--out`` is the
record of every run: the runs it already holds are kept (and not run again, even where the
ignored work folder is gone), so invocations for different sets or arms add up in one file and
one plot; ``--rerun`` runs the selected ones again and replaces their records. From the
repository root (needs ../shared/data)::

    .venv/bin/python benchmarks/fewshot.py [--sets usiigaci_phase] [--arms scratch finetune]
        [--n 1 3 10] [--draws 3]

``--quick`` runs a tiny version on the bundled demo data (CI runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from start_models import (  # noqa: E402
    MODELS,
    ROOT,
    SAME_FIELD,
    SHARED,
    STARTS_DIR,
    _cpu_seconds,
    set_split,
)
from value import data_set  # noqa: E402

from cganseg.data.dataset import CropDataset  # noqa: E402
from cganseg.data.folders import find_pairs  # noqa: E402
from cganseg.data.io import read_image, read_labels  # noqa: E402
from cganseg.data.splits import MIN_PAIRS_TO_VALIDATE, make_split  # noqa: E402
from cganseg.evaluation.evaluate import evaluate_pairs  # noqa: E402
from cganseg.inference.segment import load_segmenter, prepare_image  # noqa: E402
from cganseg.instances.flows import Flows  # noqa: E402
from cganseg.losses.flow_loss import FLOW_SCALE, FlowLoss  # noqa: E402
from cganseg.options import SegTrainConfig  # noqa: E402
from cganseg.runtime.atomic import write_text  # noqa: E402
from cganseg.training.seg_trainer import SegTrainer, train_segmenter  # noqa: E402
from cganseg.training.settings import resolve  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"
#: each set's start model: a shipped name or a checkpoint that never saw the set
STARTS = {
    "dsb2018_fluo_256": str(STARTS_DIR / "nuclei_without_dsb2018_fluo_256.pt"),
    "usiigaci_phase": "nuclei",
    "murphy_nih3t3_hoechst": "nuclei",
}
#: the network every trained arm has (the start models'; start_models.py's nuclei recipe)
NETWORK = {"model": "unet", "width": 16, "instances": "flows", "channels": "gray",
           "cell_diameter": 17.0}  # fmt: skip
TRAINING = {"crop": [128, 128], "batch_size": 8, "val_every": 100, "patience": 0,
            "device": "cpu", "num_workers": 2}  # fmt: skip
QUICK = {"width": 4, "crop": [32, 32], "batch_size": 2, "num_workers": 0, "val_every": 2,
         "tile_size": 64, "cell_diameter": None}  # fmt: skip
#: published AP@0.5 on DSB2018 (StarDist's split) with 1 / 5 / 10 training images
#: (hotaru1227/cellseg1 figures/data/figure_4_1.json, as issue 29 quotes it)
PUBLISHED_DSB = {
    "Cellpose fine-tuned (cyto2)": {1: 0.603, 5: 0.864, 10: 0.873},
    "Cellpose from scratch": {1: 0.554, 5: 0.818, 10: 0.861},
    "StarDist": {1: 0.415, 5: 0.802, 10: 0.803},
    "CellSeg1 (SAM + LoRA)": {1: 0.811, 5: 0.858, 10: 0.873},
}
SCORES = ("f1_50_pooled", "f1_50_per_image", "mean_f1_per_image", "ap_50_per_image")


# ------------------------------------------------------------------ data
def set_parts(name: str, work: Path) -> tuple[Path, dict[str, str], list[str], list[str]]:
    """A set's folder, each pair's group, its test pairs and its training pool (no pair of a
    test group in the pool)."""
    folder, groups = data_set(name, work)
    names = sorted(groups)
    groups = {n: SAME_FIELD.get(name, {}).get(g, g) for n, g in groups.items()}
    keys = sorted(set(groups.values()))
    if name == "dsb2018_fluo_256":  # the start models' own test part of this set
        test_keys = set(set_split(name, MODELS["nuclei"])["test"])
    else:
        share = 6 / len(keys) if name == "murphy_nih3t3_hoechst" else 0.25
        order = [keys[i] for i in np.random.default_rng(0).permutation(len(keys))]
        test_keys = set(order[: max(1, round(share * len(keys)))])
    test = [n for n in names if groups[n] in test_keys]
    pool = [n for n in names if groups[n] not in test_keys]
    return folder, groups, test, pool


def draw(pool: list[str], n: int, seed: int) -> dict[str, list[str]]:
    """N annotated images drawn from ``pool``, split as train-seg splits a user's N images."""
    chosen = [pool[i] for i in np.random.default_rng(1000 + seed).permutation(len(pool))[:n]]
    return make_split(chosen, seed=seed)


# ------------------------------------------------------------------ one run
def code_version() -> str:
    """A short hash of the package's source (every .py under src/cganseg), recorded with each
    run: runs of different product code are not draws of one arm (benchmarks run from copies
    of the tree, without git)."""
    digest = hashlib.sha256()
    package = ROOT / "src" / "cganseg"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def score(checkpoint: str, folder: Path, test: list[str], diameter: float | str | None,
          **thresholds: float) -> dict[str, Any]:  # fmt: skip
    """A model's scores on the test pairs, segmented as ``cganseg segment`` would (with
    ``thresholds``: load_segmenter's ``cellprob``/``flow`` instead of the stored ones), and per
    test image its TP, FP and FN at IoU 0.5 (``counts_50``: what benchmarks/curve_check.py
    feeds ``cganseg curve``'s bootstrap)."""
    seg = load_segmenter(checkpoint, "cpu", **thresholds)
    if not seg.post.cell_diameter:  # a model without cell-size rescaling (--quick's)
        diameter = None
    pairs = {p.name: p for p in find_pairs(folder)}
    rows = []
    for name in test:
        image = read_image(pairs[name].image, seg.channels)
        chw = prepare_image(seg, image, name, diameter)
        rows.append((name, read_labels(pairs[name].mask), seg.segment(chw, 512,
                                                                      diameter=diameter)))
    rep = evaluate_pairs(rows)
    return {"f1_50_pooled": rep["pooled"]["f1"][0],
            "f1_50_per_image": rep["per_image"]["f1"][0],
            "mean_f1_per_image": float(np.mean(rep["per_image"]["f1"])),
            "ap_50_per_image": rep["per_image"]["accuracy"][0],
            "counts_50": [[r["tp_iou50"], r["n_pred"] - r["tp_iou50"], r["n_gt"] - r["tp_iou50"]]
                          for r in rep["images"]]}  # fmt: skip


#: the plateau rule: a run counts as trained to a plateau when its training loss fell by less
#: than this share over the last fifth of its steps (mean of the logged losses)
PLATEAU_FALL = 0.05


def loss_fall(metrics: Path) -> float | None:
    """How much a run's training loss still fell over its last fifth of steps: 1 - (mean loss
    of the last fifth) / (mean of the fifth before), from its metrics.csv (None without one)."""
    if not metrics.is_file():
        return None
    with open(metrics, newline="", encoding="utf-8") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh) if r.get("loss")]
    fifth = len(losses) // 5
    if fifth == 0:
        return None
    before, last = losses[-2 * fifth : -fifth], losses[-fifth:]
    return 1.0 - statistics.fmean(last) / statistics.fmean(before)


def arm_options(arm: str, start: str, args: argparse.Namespace) -> dict[str, Any]:
    """The train-seg options of a trained arm (those not given are the product's defaults)."""
    base = {**NETWORK, **TRAINING, **(QUICK if args.quick else {})}
    if arm == "scratch":
        return {**base, "iterations": args.scratch_steps, "lr": 1e-3}
    options = {**base, "init_seg": start}
    variant = re.fullmatch(r"finetune(-unguarded)?(-lr(?P<lr>[0-9.]+(e-?[0-9]+)?))?"
                           r"(-steps(?P<steps>[0-9]+))?(-percropflows)?(-maskcutflows)?"
                           r"(-frozenbn)?",
                           arm)  # fmt: skip
    if variant is None:
        raise SystemExit(f"error: unknown arm {arm!r} (zero-shot, scratch, finetune"
                         "[-unguarded][-lrX][-stepsN][-percropflows][-maskcutflows][-frozenbn])"
                         )  # fmt: skip
    if variant["lr"]:
        options["lr"] = float(variant["lr"])
    if variant["steps"]:
        options["iterations"] = int(variant["steps"])
    if args.quick:
        options["iterations"] = args.scratch_steps
    return options


def run_one(set_name: str, arm: str, n: int, seed: int, args: argparse.Namespace,
            parts: tuple) -> dict[str, Any]:  # fmt: skip
    """Train (unless zero-shot) and score one draw; kept in the run folder's result.json."""
    folder, _, test, pool = parts
    start = args.start or STARTS.get(set_name, "nuclei")
    run = args.work / set_name / arm / f"N{n}_d{seed}"
    done = run / "result.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if arm != "zero-shot" and "loss_fall" not in result:  # recorded before the rule
            result["loss_fall"] = loss_fall(run / "run" / "metrics.csv")
        if arm != "zero-shot" and "scores_auto" not in result and (run / "run").is_dir():
            result["scores_auto"] = score(str(run / "run"), folder, test, "auto")
            write_text(done, json.dumps(result, indent=1) + "\n")
        return result
    run.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"set": set_name, "arm": arm, "n": n, "draw": seed,
                              "code": code_version()}  # fmt: skip
    if arm == "zero-shot":
        result["scores"] = score(start, folder, test, "auto")
        result["scores_train_median"] = score(start, folder, test, None)
        result["cpu_s"] = 0.0
    else:
        guarded = "-unguarded" not in arm
        split = draw(pool, n, seed)
        write_text(run / "split.json", json.dumps({**split, "test": []}))
        given = {**arm_options(arm, start, args), "data": str(folder),
                 "out": str(run / "run"), "split_file": str(run / "split.json"), "seed": seed}
        if (run / "run").exists():  # an interrupted run: train it afresh
            shutil.rmtree(run / "run")
        cfg = resolve(SegTrainConfig, given)
        before, wall = _cpu_seconds(), time.time()
        per_crop = "-percropflows" in arm
        flows = (mock.patch.object(Flows, "image_target_vector", None) if per_crop
                 else contextlib.nullcontext())  # fmt: skip
        norm = (mock.patch.object(torch.nn.BatchNorm2d, "train", _eval_mode)
                if "-frozenbn" in arm else contextlib.nullcontext())  # fmt: skip
        masked = (mock.patch.object(CropDataset, "_remake_cut", _mask_cut_flows)
                  if "-maskcutflows" in arm else contextlib.nullcontext())  # fmt: skip
        loss = (mock.patch.object(FlowLoss, "forward", _flow_loss_without_nan)
                if "-maskcutflows" in arm else contextlib.nullcontext())  # fmt: skip
        with flows, norm, masked, loss, mock.patch.object(SegTrainer, "guards_start", guarded):
            summary = train_segmenter(cfg, progress=not args.quiet)
        result.update(cpu_s=_cpu_seconds() - before, wall_s=time.time() - wall,
                      train=split["train"], val=split["val"], steps=summary["step"],
                      best_step=summary.get("best_step"), lr=cfg.lr,
                      iterations=cfg.iterations)  # fmt: skip
        result["scores"] = score(str(run / "run"), folder, test, None)
        result["scores_auto"] = score(str(run / "run"), folder, test, "auto")
        result["loss_fall"] = loss_fall(run / "run" / "metrics.csv")
    result["n_test"] = len(test)
    write_text(done, json.dumps(result, indent=1) + "\n")
    return result


def _mask_cut_flows(self: CropDataset, field: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """``-maskcutflows``' CropDataset._remake_cut: the flows (channels 0-1) of the cells on the
    crop's edge become NaN, which :func:`_flow_loss_without_nan` leaves out; nothing is made
    again (the moved whole-image flows of a cut cell point to its centre outside the crop)."""
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    cut = np.unique(edge[edge > 0])
    if cut.size == 0:
        return field
    field = field.clone()
    field[:2, torch.from_numpy(np.isin(mask, cut))] = float("nan")
    return field


def _flow_loss_without_nan(self: FlowLoss, output: torch.Tensor, target: torch.Tensor
                           ) -> torch.Tensor:  # fmt: skip
    """``-maskcutflows``' FlowLoss: Cellpose's loss with the NaN flow targets' pixels left out
    of the flow term (their squared error counts 0, the mean still over every pixel, so a crop
    with no cut cell scores exactly as FlowLoss)."""
    output, target = output.float(), target.float()
    flows = target[:, :2]
    error = torch.where(torch.isnan(flows), 0.0, output[:, :2] - FLOW_SCALE * flows)
    cell = torch.nn.functional.binary_cross_entropy_with_logits(output[:, 2], target[:, 2])
    return error.square().mean() / 2.0 + cell


def _eval_mode(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    """``-frozenbn``'s BatchNorm2d.train: the layer stays in eval mode (it normalises with the
    start's running statistics and keeps them), whatever mode the network is put in."""
    return torch.nn.Module.train(self, False)


# ------------------------------------------------------------------ report
RunKey = tuple[str, str, int, int]


def _key(run: dict[str, Any]) -> RunKey:
    return run["set"], run["arm"], int(run["n"]), int(run["draw"])


def recorded_runs(path: Path) -> dict[RunKey, dict[str, Any]]:
    """The runs an earlier invocation wrote into ``--out``, by set, arm, N and draw."""
    if not path.is_file():
        return {}
    return {_key(r): r for r in json.loads(path.read_text())["runs"]}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd of each score per set, arm and N."""
    table: dict[str, Any] = {}
    for r in results:
        table.setdefault(r["set"], {}).setdefault(r["arm"], {}).setdefault(str(r["n"]), []
                                                                           ).append(r)
    out: dict[str, Any] = {}
    for set_name, arms in table.items():
        for arm, by_n in arms.items():
            for n, rows in by_n.items():
                falls = [r["loss_fall"] for r in rows if r.get("loss_fall") is not None]
                cell = {"draws": len(rows),
                        "cpu_s_median": statistics.median(r["cpu_s"] for r in rows),
                        "loss_fall_max": max(falls) if falls else None}
                for key in SCORES:
                    values = [r["scores"][key] for r in rows]
                    cell[key] = {"mean": statistics.fmean(values),
                                 "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
                auto = [r["scores_auto"]["f1_50_pooled"] for r in rows if "scores_auto" in r]
                if len(auto) == len(rows):  # the run segmenting at --diameter auto
                    cell["f1_50_pooled_auto"] = {
                        "mean": statistics.fmean(auto),
                        "sd": statistics.stdev(auto) if len(auto) > 1 else 0.0}
                out.setdefault(set_name, {}).setdefault(arm, {})[n] = cell
    return out


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'set':24s} {'arm':16s} {'N':>4s} {'draws':>5s} {'F1@0.5 pooled':>16s} "
          f"{'mean F1':>14s} {'AP@0.5/img':>14s} {'CPU-s':>7s} {'loss fall':>9s} "
          f"{'F1@0.5 at auto':>16s}")
    for set_name, arms in summary.items():
        for arm, by_n in arms.items():
            for n, c in sorted(by_n.items(), key=lambda kv: int(kv[0])):
                cells = [f"{c[k]['mean']:.3f} +- {c[k]['sd']:.3f}"
                         for k in ("f1_50_pooled", "mean_f1_per_image", "ap_50_per_image")]
                fall = c.get("loss_fall_max")
                print(f"{set_name:24s} {arm:16s} {n:>4s} {c['draws']:>5d} {cells[0]:>16s} "
                      f"{cells[1]:>14s} {cells[2]:>14s} {c['cpu_s_median']:>7.0f} "
                      f"{'' if fall is None else f'{fall:.1%}':>9s} "
                      f"{_cell(c.get('f1_50_pooled_auto')):>16s}")


def product_scores(run: dict[str, Any]) -> dict[str, Any]:
    """A run's scores as the product segments with it today: a run fine-tuned on fewer than
    ``MIN_PAIRS_TO_VALIDATE`` pairs at ``--diameter auto`` (its start's default kept,
    ``training.final.few_images_diameter``; earlier runs were scored at the images' median and
    rescored at auto), every other run at its default."""
    few = run["arm"].startswith("finetune") and int(run["n"]) < MIN_PAIRS_TO_VALIDATE
    return run["scores_auto"] if few and "scores_auto" in run else run["scores"]


def markdown_tables(runs: list[dict[str, Any]], arms: list[str]) -> str:
    """One Markdown table per set (the README's): per N and arm, pooled F1@0.5 mean +- sd / mean
    F1 0.5:0.95 (draws; median CPU-s of training), scored as :func:`product_scores` says."""
    lines: list[str] = []
    for set_name in sorted({r["set"] for r in runs}):
        rows = [r for r in runs if r["set"] == set_name and r["arm"] in arms]
        present = [arm for arm in arms if any(r["arm"] == arm for r in rows)]
        if not present:
            continue
        lines += [f"{set_name}:", "", "| N | " + " | ".join(present) + " |",
                  "|---" * (len(present) + 1) + "|"]  # fmt: skip
        for n in sorted({int(r["n"]) for r in rows}):
            cells = []
            for arm in present:
                picked = [r for r in rows if r["arm"] == arm and int(r["n"]) == n]
                if not picked:
                    cells.append("")
                    continue
                got = [product_scores(r) for r in picked]
                f1 = [g["f1_50_pooled"] for g in got]
                sd = f" ± {statistics.stdev(f1):.3f}" if len(f1) > 1 else ""
                cpu = statistics.median(r["cpu_s"] for r in picked)
                cost = f"; {cpu:.0f} CPU-s" if cpu else ""
                cells.append(f"{statistics.fmean(f1):.3f}{sd} / "
                             f"{statistics.fmean(g['mean_f1_per_image'] for g in got):.3f} "
                             f"({len(got)}{cost})")  # fmt: skip
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(value: dict[str, float] | None) -> str:
    return "" if value is None else f"{value['mean']:.3f} +- {value['sd']:.3f}"


def plot(summary: dict[str, Any], path: Path) -> None:
    """F1@0.5 (pooled) and mean F1 against N, one column per set; the published DSB curves
    (AP@0.5 turned into F1 = 2AP/(1+AP)) beside ours on the DSB set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(summary)
    fig, axes = plt.subplots(2, len(sets), figsize=(4.2 * len(sets), 7), squeeze=False)
    for j, set_name in enumerate(sets):
        for i, key in enumerate(("f1_50_pooled", "mean_f1_per_image")):
            ax = axes[i][j]
            for arm, by_n in summary[set_name].items():
                ns = sorted(by_n, key=int)
                x = [max(int(n), 1) for n in ns]
                y = [by_n[n][key]["mean"] for n in ns]
                sd = [by_n[n][key]["sd"] for n in ns]
                if arm == "zero-shot":
                    ax.axhline(y[0], ls=":", color="k", label="zero-shot (start model)")
                else:
                    ax.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=arm)
            if set_name == "dsb2018_fluo_256" and key == "f1_50_pooled":
                for label, curve in PUBLISHED_DSB.items():
                    ax.plot(list(curve), [2 * a / (1 + a) for a in curve.values()], ls="--",
                            alpha=0.6, label=f"{label} (published)")
            ax.set_xscale("log")
            ax.set_xlabel("annotated training images N")
            ax.set_ylabel("F1@0.5 (pooled)" if i == 0 else "mean F1, IoU 0.5:0.95")
            ax.set_title(set_name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(STARTS))
    parser.add_argument("--arms", nargs="+", default=["zero-shot", "scratch", "finetune"])
    parser.add_argument("--n", nargs="+", type=int, default=[1, 3, 10, 30, 100])
    parser.add_argument("--draws", type=int, default=3, help="draws per N <= 10 (larger N: 2 "
                        "for N <= 30, else 1)")  # fmt: skip
    parser.add_argument("--scratch-steps", type=int, default=1500)
    parser.add_argument("--start", help="start model of every set (default: STARTS)")
    parser.add_argument("--work", type=Path, default=WORK / "fewshot")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fewshot.json")
    parser.add_argument("--rerun", action="store_true", help="run the selected runs again "
                        "even where --out records them, and replace their records (after a "
                        "change to the product; a finished run in --work is reused)")  # fmt: skip
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing; report the runs finished so far")
    parser.add_argument("--table", action="store_true", help="also print the README's "
                        "Markdown table per set of the --arms (every recorded N)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a tiny version on the bundled "
                        "demo data, started from a run folder given by --start")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        if not args.start:
            parser.error("--quick needs --start RUN (a tiny run folder to fine-tune)")
        args.sets, args.n, args.draws = ["demo"], [1, 3], 1
        args.scratch_steps = min(args.scratch_steps, 4)
    elif not SHARED.is_dir():
        print(f"error: {SHARED} not found: the data sets live there", file=sys.stderr)
        return 2
    recorded = recorded_runs(args.out)  # they count as finished
    results: dict[RunKey, dict[str, Any]] = dict(recorded)
    for set_name in args.sets:
        parts = set_parts(set_name, args.work)
        if args.quick:  # three test images are enough to see it work
            parts = (*parts[:2], parts[2][:3], parts[3])
        for arm in args.arms:
            for n in args.n:
                if n > len(parts[3]):
                    continue
                draws = 1 if arm == "zero-shot" else (
                    args.draws if n <= 10 else 2 if n <= 30 else 1)  # fmt: skip
                for seed in range(draws):
                    key = 0 if arm == "zero-shot" else n  # zero-shot trains on none
                    done = args.work / set_name / arm / f"N{key}_d{seed}" / "result.json"
                    fresh = args.rerun or (set_name, arm, key, seed) not in recorded
                    if done.is_file() or fresh:
                        if args.finished_only and not done.is_file():
                            continue
                        r = run_one(set_name, arm, key, seed, args, parts)
                        results[_key(r)] = r
                    r = results[(set_name, arm, key, seed)]
                    print(f"{set_name} {arm} N={key} draw {seed}: F1@0.5 "
                          f"{r['scores']['f1_50_pooled']:.3f}, CPU {r['cpu_s']:.0f} s",
                          flush=True)  # fmt: skip
                if arm == "zero-shot":
                    break
    runs = [results[k] for k in sorted(results)]
    summary = summarise(runs)
    print_table(summary)
    if args.table:
        print(markdown_tables(runs, args.arms))
    record = {"settings": {"network": NETWORK, "training": TRAINING, "starts": STARTS,
                           "scratch_steps": args.scratch_steps, "quick": args.quick},
              "published_dsb_ap50": PUBLISHED_DSB, "summary": summary, "runs": runs}  # fmt: skip
    write_text(args.out, json.dumps(record, indent=1) + "\n")
    if summary:
        plot(summary, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
