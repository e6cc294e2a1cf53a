"""Conventional training of a segmenter (the paper's baseline, scenarios B and C).

One loop, iteration-budgeted: random crops with conventional augmentation -> segmenter -> CE + Dice
-> Adam with warm-up + cosine schedule. Every ``val_every`` steps the whole validation images are
segmented and scored (F1@0.5); the best model is kept as ``best.pt`` and the full training state as
``last.pt`` (both atomic). Training stops early after ``patience`` validations without improvement.
``--resume`` continues ``last.pt`` exactly: model, optimiser, schedule, scaler, RNG and the
position in the seeded data stream are restored.

A run folder holds ``config.yaml``, ``split.json``, ``metrics.csv``, ``tensorboard/``, ``best.pt``,
``last.pt`` and, when the split has a test set, ``test/`` with the evaluation of ``best.pt``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cganseg.data.augment import ConventionalAugment
from cganseg.data.dataset import CropDataset, Sample, SeededSampler, load_samples
from cganseg.data.folders import find_pairs
from cganseg.data.splits import load_split, make_split, save_split
from cganseg.errors import InputError, TrainingDiverged
from cganseg.evaluation.evaluate import evaluate_pairs, write_report
from cganseg.inference.segment import Segmenter, resolve_device, segmenter_payload
from cganseg.losses.ce_dice import CEDiceLoss
from cganseg.models.registry import build_segmenter
from cganseg.training.checkpoint import load_checkpoint, save_checkpoint
from cganseg.training.config import SegTrainConfig, parse_channels
from cganseg.training.run_log import RunLog
from cganseg.training.schedule import make_scheduler
from cganseg.training.validation import VAL_COLUMNS, validate_segmenter

#: options that may change when a run is resumed; all others must match the saved config
RESUMABLE_OVERRIDES = ("iterations", "device", "num_workers", "val_every", "patience", "log_every")


@dataclass
class DataSplit:
    """The samples of one run, loaded and checked before anything is written."""

    split: dict[str, list[str]]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def load_data_split(
    cfg: SegTrainConfig, split: dict[str, list[str]] | None, progress: bool
) -> DataSplit:
    """Find the pairs, make (or reuse) the split and load every sample of it."""
    pairs = find_pairs(cfg.data, cfg.layout, cfg.mask_suffix, cfg.image_suffix)
    if split is None and cfg.split_file:
        split = load_split(cfg.split_file)
    if split is None:
        split = make_split(
            [p.name for p in pairs],
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            n_train=cfg.n_train,
            seed=cfg.seed,
        )
    by_name = {p.name: p for p in pairs}
    missing = [n for part in split.values() for n in part if n not in by_name]
    if missing:
        raise InputError(f"split names {missing[0]!r}, which is not in the data set", cfg.data)
    channels = parse_channels(cfg.channels)

    def load(part: str) -> list[Sample]:
        return load_samples(
            [by_name[n] for n in split[part]], channels, progress, f"loading {part}"
        )

    data = DataSplit(split, load("train"), load("val"), load("test"))
    ref = data.train[0].image.shape[0]
    for s in data.val + data.test:
        if s.image.shape[0] != ref:
            raise InputError(
                f"{s.name} has {s.image.shape[0]} channel(s), training images have {ref}"
            )
    return data


def merge_resume_config(saved: SegTrainConfig, given: dict[str, Any]) -> SegTrainConfig:
    """The saved config, with only the options that may change on resume taken from ``given``."""
    merged = saved.to_dict()
    for key, value in given.items():
        if value is None or key in ("data", "out") or merged.get(key) == value:
            continue
        if key not in RESUMABLE_OVERRIDES:
            raise InputError(
                f"--{key.replace('_', '-')} {value} differs from the run's {merged.get(key)}; "
                f"only {', '.join(RESUMABLE_OVERRIDES)} may change on resume"
            )
        merged[key] = value
    return SegTrainConfig.from_dict(merged)


class SegTrainer:
    """State and steps of one conventional training run."""

    def __init__(self, cfg: SegTrainConfig, resume_state: dict[str, Any] | None, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.run_dir = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        saved_split = resume_state["split"] if resume_state else None
        self.data = load_data_split(cfg, saved_split, progress)
        torch.manual_seed(cfg.seed)
        in_ch = self.data.train[0].image.shape[0]
        self.model = build_segmenter(cfg.model, in_ch, cfg.n_classes, cfg.width).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.scheduler = make_scheduler(
            self.optimizer, cfg.iterations, cfg.warmup_fraction, cfg.schedule
        )
        self.amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = CEDiceLoss()
        self.step, self.best_score, self.stale = 0, -math.inf, 0
        if resume_state:
            self._restore(resume_state)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_score, self.stale = state["step"], state["best_score"], state["stale"]
        torch.set_rng_state(state["torch_rng"])

    def _payload(self, full: bool) -> dict[str, Any]:
        payload = segmenter_payload(self.model, self.cfg.channels, self.cfg.min_size)
        payload.update(kind="train-seg", step=self.step, config=self.cfg.to_dict())
        if full:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                best_score=self.best_score,
                stale=self.stale,
                torch_rng=torch.get_rng_state(),
                split=self.data.split,
            )
        return payload

    def save_last(self) -> None:
        save_checkpoint(self.run_dir / "last.pt", self._payload(full=True))

    def loader(self) -> DataLoader:
        aug = ConventionalAugment(p_vanilla=self.cfg.p_vanilla)
        dataset = CropDataset(self.data.train, tuple(self.cfg.crop), self.cfg.n_classes, aug)
        sampler = SeededSampler(len(dataset), self.cfg.seed, start=self.step * self.cfg.batch_size)
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # keep the global RNG untouched, so resume is exact
        )

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.model.train()
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss_fn(self.model(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss.detach()

    def validate(self) -> dict[str, float]:
        if not self.data.val:
            return {}
        return validate_segmenter(
            self.model,
            self.data.val,
            min_size=self.cfg.min_size,
            device=self.device,
            tile_size=self.cfg.tile_size,
        )

    def checkpoint(self, metrics: dict[str, float]) -> bool:
        """Save last.pt (and best.pt when improved); True when early stopping says stop."""
        score = metrics.get("val_f1_iou50")
        if score is None or score > self.best_score:
            self.best_score = -math.inf if score is None else score
            self.stale = 0
            save_checkpoint(self.run_dir / "best.pt", self._payload(full=False))
        else:
            self.stale += 1
        self.save_last()
        return bool(self.cfg.patience) and self.stale >= self.cfg.patience

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        log = RunLog(self.run_dir, ["loss", *VAL_COLUMNS], resume_step=self.step or None)
        running, n_running = torch.zeros((), device=self.device), 0
        stopped_early = False
        batches = iter(self.loader())
        bar = tqdm(
            total=cfg.iterations,
            initial=self.step,
            desc="train-seg",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        postfix: dict[str, str] = {}
        try:
            while self.step < cfg.iterations and not stopped_early:
                running += self.train_step(*next(batches))
                n_running += 1
                bar.update(1)
                values: dict[str, float] = {}
                last = self.step == cfg.iterations
                if self.step % cfg.log_every == 0 or last:
                    values["loss"] = (running / n_running).item()
                    running.zero_()
                    n_running = 0
                    if not math.isfinite(values["loss"]):
                        raise TrainingDiverged(
                            f"loss became {values['loss']} at step {self.step}; training stopped, "
                            f"last good checkpoint kept in {self.run_dir / 'last.pt'} "
                            "(try a lower --lr, or --no-amp)"
                        )
                    postfix["loss"] = f"{values['loss']:.4f}"
                if self.step % cfg.val_every == 0 or last:
                    values.update(self.validate())
                    stopped_early = self.checkpoint(values)
                    if "val_f1_iou50" in values:
                        postfix["val F1@0.5"] = f"{values['val_f1_iou50']:.3f}"
                if values:
                    log.log(self.step, values, {"lr": self.scheduler.get_last_lr()[0]})
                    bar.set_postfix(postfix)
        except KeyboardInterrupt:
            self.save_last()
            bar.close()
            log.close()
            raise
        bar.close()
        log.close()
        if stopped_early:
            tqdm.write(
                f"early stopping at step {self.step}: no better validation F1 in "
                f"{cfg.patience} validations"
            )
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Evaluate best.pt on the test split (if any) and return a summary."""
        summary: dict[str, Any] = {"step": self.step, "best_val_f1_iou50": self.best_score}
        if self.data.test:
            best = load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
            self.model.load_state_dict(best["model_state"])
            seg = Segmenter(self.model, None, self.cfg.min_size, self.device)
            report = evaluate_pairs(
                (s.name, s.labels, seg.segment(s.image, tile_size=self.cfg.tile_size))
                for s in self.data.test
            )
            write_report(report, self.run_dir / "test")
            summary["test_f1_iou50"] = report["per_image"]["f1"][0]
        return summary


def train_segmenter(
    cfg: SegTrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) conventional training; returns a summary dict.

    ``given``: on resume, the options the user passed explicitly; only
    :data:`RESUMABLE_OVERRIDES` may differ from the saved config.
    """
    run_dir = Path(cfg.out)
    state = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise InputError("nothing to resume: no last.pt in the run folder", run_dir)
        state = load_checkpoint(run_dir / "last.pt")
        if state.get("kind") != "train-seg":
            raise InputError("last.pt is not a train-seg checkpoint", run_dir / "last.pt")
        cfg = merge_resume_config(SegTrainConfig.from_dict(state["config"]), given or {})
        tqdm.write(f"resuming {run_dir} from step {state['step']}")
    elif (run_dir / "last.pt").exists():
        raise InputError(
            "already holds a training run; add --resume or choose another --out", run_dir
        )
    trainer = SegTrainer(cfg, state, progress)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output folder ({exc.strerror or exc})", run_dir
        ) from None
    cfg.save(run_dir / "config.yaml")
    save_split(run_dir / "split.json", trainer.data.split)
    return trainer.run()
