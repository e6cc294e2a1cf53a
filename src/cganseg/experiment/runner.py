"""``cganseg experiment``: every run of the cross-validation, resumable, then the report.

Per fold and backbone: B (conventional, N pairs), C (conventional, all pairs of the fold), A
(cGAN-Seg, N pairs), the FID of A's generator on the fold's test masks, and optionally D
(conventional, N real pairs + synthetic pairs drawn from the fold's N training masks and made by
A's generator). All scenarios of a fold share its validation and test sets.

Layout of ``out``: ``experiment.yaml``, ``fold_K/split_N.json`` and ``split_all.json``, one run
folder per run (``fold_K/A_unet`` ...) with ``result.json`` once done, ``fold_K/synthetic_unet``
for D, and ``report/``. A run with ``result.json`` is skipped; one with ``last.pt`` is resumed;
so the command, run again after an interruption, goes on where it stopped.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from cganseg import instances as modes
from cganseg.data.dataset import load_samples
from cganseg.data.folders import find_pairs
from cganseg.data.splits import load_split, save_split
from cganseg.errors import InputError
from cganseg.evaluation.fid import HeldOutFid
from cganseg.experiment.config import ExperimentConfig
from cganseg.experiment.folds import fold_splits
from cganseg.experiment.report import write_experiment_report
from cganseg.inference.generate import load_generator
from cganseg.models.fid_inception import find_fid_weights, load_fid_features
from cganseg.options import (
    CGanTrainConfig,
    SegTrainConfig,
    apply_preset,
    parse_channels,
    read_yaml_mapping,
)
from cganseg.reports.grid import save_grid
from cganseg.reports.overlays import generation_row
from cganseg.runtime.atomic import check_writable, write_text
from cganseg.runtime.device import resolve_device
from cganseg.runtime.interrupt import check
from cganseg.runtime.lock import folder_lock
from cganseg.runtime.outputs import foreign_entries
from cganseg.runtime.progress import progress_bar
from cganseg.synth.make_masks import write_synthetic_masks
from cganseg.synth.pairs import generate_pairs
from cganseg.training.cgan_trainer import train_cgan
from cganseg.training.pretrain import resumable
from cganseg.training.seg_trainer import train_segmenter
from cganseg.training.settings import resolve

RESULT = "result.json"
#: segmenter options that B, C and D take from scenario A unless ``seg`` sets them
SHARED_SEG_OPTIONS = ("preset", "width", "n_classes", "min_size", "tile_size", "cell_diameter")


@dataclass(frozen=True)
class Job:
    fold: int
    scenario: str
    backbone: str

    @property
    def name(self) -> str:
        return f"fold {self.fold + 1} {self.scenario} {self.backbone}"


def _cgan_options(cfg: ExperimentConfig) -> dict[str, Any]:
    return apply_preset(cfg.cgan, cls=CGanTrainConfig)


def _common(cfg: ExperimentConfig, job: Job) -> dict[str, Any]:
    return {
        "data": cfg.data,
        "layout": cfg.layout,
        "mask_suffix": cfg.mask_suffix,
        "image_suffix": cfg.image_suffix,
        "channels": cfg.channels,
        "device": cfg.device,
        "model": job.backbone,
        "seed": cfg.seed + job.fold,
    }


def run_config(cfg: ExperimentConfig, job: Job, fold_dir: Path) -> SegTrainConfig:
    """The training config of one run (checked, so a bad option fails before any training)."""
    split = "split_all.json" if job.scenario == "C" else "split_N.json"
    options = {
        **_common(cfg, job),
        "out": str(fold_dir / f"{job.scenario}_{job.backbone}"),
        "split_file": str(fold_dir / split),
    }
    if job.scenario == "A":
        return resolve(CGanTrainConfig, {**_cgan_options(cfg), **options}, source="cgan options")
    cgan = _cgan_options(cfg)
    shared = {k: v for k, v in cgan.items() if k in SHARED_SEG_OPTIONS}
    # B, C and D make cells as A does, so scenarios differ in training only
    shared["instances"] = cgan.get("instances") or modes.default_name(
        cgan.get("n_classes", CGanTrainConfig.n_classes))
    if job.scenario == "D":
        synth = cfg.synth()
        options["extra"] = str(fold_dir / f"synthetic_{job.backbone}" / "pairs")
        options["extra_fraction"] = synth["fraction"]
    return resolve(SegTrainConfig, {**shared, **cfg.seg, **options}, source="seg options")


def _claim(cfg: ExperimentConfig, out: Path) -> None:
    """Record the settings in ``out``; refuse a folder holding an experiment made otherwise."""
    path = out / "experiment.yaml"
    mine = {k: v for k, v in cfg.to_dict().items() if k != "device"}
    if path.is_file():
        saved = read_yaml_mapping(path)
        saved.pop("device", None)
        if saved != mine:
            diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            raise InputError(
                f"holds an experiment with other settings ({', '.join(diff)}); choose another out",
                out,
            )
    elif foreign_entries(out):
        raise InputError("is not empty and holds no experiment; choose another out", out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _train(run_cfg: SegTrainConfig, progress: bool) -> dict[str, Any]:

    train = train_cgan if isinstance(run_cfg, CGanTrainConfig) else train_segmenter
    resume = resumable(run_cfg.out)
    # a resumed run keeps its saved options, but may move to the device asked for now
    return train(run_cfg, resume=resume, progress=progress, given={"device": run_cfg.device})


def _synthetic_pairs(cfg: ExperimentConfig, job: Job, fold_dir: Path, progress: bool) -> None:
    """Scenario D's pairs: masks from the fold's N training cells, images from A's generator."""

    synth = cfg.synth()
    folder = fold_dir / f"synthetic_{job.backbone}"
    write_synthetic_masks(
        cfg.pairs()[0].mask.parent,
        folder / "masks",
        int(synth["n"]),
        layout=synth["layout"],
        density=float(synth["density"]),
        seed=cfg.seed + job.fold,
        names=load_split(fold_dir / "split_N.json")["train"],
        progress=progress,
    )
    generate_pairs(
        fold_dir / f"A_{job.backbone}",
        folder / "masks",
        folder / "pairs",
        per_mask=int(synth["per_mask"]),
        seed=cfg.seed + job.fold,
        device=cfg.device,
        progress=progress,
    )


def _fid(cfg: ExperimentConfig, job: Job, fold_dir: Path, progress: bool) -> dict[str, Any]:
    """FID/KID of A's generator: its images of the fold's test masks vs the real test images;
    also the grid of mask | generated | real for the report."""

    run = fold_dir / f"A_{job.backbone}"
    test = load_split(fold_dir / "split_N.json")["test"]
    by_name = {p.name: p for p in cfg.pairs()}
    channels = parse_channels(cfg.channels)
    samples = load_samples([by_name[n] for n in test], channels, progress, "loading test")
    device = resolve_device(cfg.device)
    held_out = HeldOutFid(samples, load_fid_features(cfg.fid_weights, device), device, cfg.seed)
    gen = load_generator(run, cfg.device)
    fakes = held_out.generate(gen.generate, progress)
    result = held_out.score(fakes)
    rows = [
        generation_row(s.labels, [f], s.image)
        for s, f in list(zip(samples, fakes, strict=True))[:4]
    ]
    save_grid(
        run / "generated_vs_real.png",
        rows,
        ["test mask", "generated", "real"],
        [s.name for s in samples[:4]],
    )
    return result


def run_scores(run_dir: Path) -> dict[str, Any]:
    """The scores of a run's test evaluation (``test/metrics.json``), per image, as reported."""
    report = json.loads((run_dir / "test" / "metrics.json").read_text(encoding="utf-8"))
    t = [round(x, 2) for x in report["thresholds"]]
    per_image = report["per_image"]
    i50 = t.index(0.5)
    return {
        "f1_50": per_image["f1"][i50],
        "f1_mean": float(np.mean(per_image["f1"])),
        "accuracy_50": per_image["accuracy"][i50],
        "pq_50": per_image["panoptic_quality"][i50],
        "dice": report["dice"],
        "thresholds": t,
        "f1_curve": per_image["f1"],
        "n_test": report["n_images"],
    }


def _do_job(cfg: ExperimentConfig, job: Job, fold_dir: Path, progress: bool) -> dict[str, Any]:
    run_cfg = run_config(cfg, job, fold_dir)
    run_dir = Path(run_cfg.out)
    t0 = time.perf_counter()
    if job.scenario == "D":
        _synthetic_pairs(cfg, job, fold_dir, progress)
    summary = _train(run_cfg, progress)
    result: dict[str, Any] = {
        "fold": job.fold,
        "scenario": job.scenario,
        "backbone": job.backbone,
        "n_train_pairs": len(load_split(run_cfg.split_file)["train"]),
        "n_extra_pairs": len(find_pairs(run_cfg.extra)) if run_cfg.extra else 0,
        "steps": summary["step"],
        "best_val_f1_50": summary["best_val_f1_iou50"],
        **run_scores(run_dir),
    }
    if job.scenario == "A" and cfg.fid:
        result["fid"] = _fid(cfg, job, fold_dir, progress)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    write_text(run_dir / RESULT, json.dumps(result, indent=2) + "\n")
    return result


def plan(cfg: ExperimentConfig) -> tuple[list[dict[str, Any]], list[Job]]:
    """The fold splits and the jobs in the order they run (A before D within a fold)."""
    folds = fold_splits(
        [p.name for p in cfg.pairs()], cfg.folds, cfg.n_train, cfg.val_fraction, cfg.seed
    )
    order = [s for s in "BCAD" if s in cfg.scenarios]
    jobs = [Job(f, s, b) for f in range(cfg.folds) for b in cfg.backbones for s in order]
    return folds, jobs


def run_experiment(cfg: ExperimentConfig, progress: bool = True) -> Path:
    """Run (or resume) every job, then write the report; returns the report's HTML path."""
    out = Path(cfg.out)
    folds, jobs = plan(cfg)
    for job in jobs[: len(cfg.scenarios) * len(cfg.backbones)]:
        run_config(cfg, job, out / "fold_1")  # refuse bad run options before anything is written
    if cfg.fid and "A" in cfg.scenarios:

        find_fid_weights(cfg.fid_weights)  # say now, not after hours, that the network is missing

    check_writable(out)
    with folder_lock(out, "experiment"):
        return _run_locked(cfg, out, folds, jobs, progress)


def _run_locked(cfg: ExperimentConfig, out: Path, folds, jobs: list[Job], progress: bool) -> Path:

    # every pair read once now: a bad file is named before anything is written, not in run 7
    load_samples(cfg.pairs(), parse_channels(cfg.channels), progress, "checking data")
    _claim(cfg, out)
    for i, fold in enumerate(folds):
        for key, split in fold.items():
            save_split(out / f"fold_{i + 1}" / f"split_{key}.json", split)
    results = []
    bar = progress_bar(jobs, desc="experiment", unit="run", disable=not progress, position=0)
    for job in bar:
        fold_dir = out / f"fold_{job.fold + 1}"
        done = fold_dir / f"{job.scenario}_{job.backbone}" / RESULT
        if done.is_file():
            result = json.loads(done.read_text(encoding="utf-8"))
        else:
            tqdm.write(f"experiment: {job.name}")
            result = _do_job(cfg, job, fold_dir, progress)
        results.append(result)
        check(f"stopped after {job.name}; the same command goes on from there")
    return write_experiment_report(cfg, results, out / "report")
