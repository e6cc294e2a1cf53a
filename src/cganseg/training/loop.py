"""The loop skeleton shared by conventional training and cGAN-Seg training.

A trainer subclass builds its networks and does one optimisation step; this base does the rest,
the same way for both: seeded data stream, averaged loss terms in ``metrics.csv`` and TensorBoard
(one host sync per ``log_every`` steps, not per step), validation of the segmenter on whole images
(F1@0.5) every ``val_every`` steps, ``best.pt``/``last.pt`` written atomically, early stopping,
a clean stop on NaN/inf in the losses or weights (or a rollback to ``last.pt`` with lower learning
rates, ``on_divergence: rollback``), SIGINT/SIGTERM stopping after the current step with
``last.pt`` saved, exact ``--resume``, and the final evaluation of ``best.pt`` on the test split.
Started by ``torchrun``, the same loop trains data-parallel (:mod:`cganseg.runtime.distributed`):
each process takes its share of every global batch, and rank 0 alone validates, logs and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cganseg.checkpoint import (
    load_checkpoint,
    restore_state,
    save_checkpoint,
    segmenter_payload,
    state_entries,
)
from cganseg.data.augment import ConventionalAugment
from cganseg.data.dataset import (
    CropDataset,
    MixedSampler,
    Sample,
    SeededSampler,
    ShardSampler,
    load_samples,
)
from cganseg.data.folders import Pair, find_pairs
from cganseg.data.io import file_sha256
from cganseg.data.rescale import median_diameter, to_diameter
from cganseg.data.splits import load_split, make_split, save_split
from cganseg.errors import InputError, TrainingDiverged
from cganseg.evaluation.evaluate import evaluate_pairs, write_report
from cganseg.inference.segment import Segmenter
from cganseg.instances import InstanceMode, mode
from cganseg.instances.postprocessing import ENTRY as POST_ENTRY
from cganseg.models.registry import DEFAULT_WIDTHS, build_segmenter
from cganseg.options import PATH_OPTIONS, SegTrainConfig, parse_channels
from cganseg.runtime import distributed
from cganseg.runtime.atomic import check_writable
from cganseg.runtime.device import resolve_device
from cganseg.runtime.interrupt import (
    Interrupted,
    check,
    graceful_stop,
    ignore_stop_signals,
    requested,
)
from cganseg.runtime.lock import folder_lock
from cganseg.runtime.outputs import inside
from cganseg.training.pace import Pace
from cganseg.training.run_log import RunLog
from cganseg.training.stopping import EarlyStopping, Rollbacks
from cganseg.training.tuning import tune_thresholds
from cganseg.training.validation import VAL_COLUMNS, validate_segmenter

ConfigT = TypeVar("ConfigT", bound=SegTrainConfig)
#: options that may change when a run is resumed; all others must match the saved config
RESUMABLE_OVERRIDES = (
    "iterations",
    "device",
    "num_workers",
    "val_every",
    "patience",
    "log_every",
    "sample_every",
    "fused_adam",
    "channels_last",
    "compile",
    "on_divergence",
    "max_rollbacks",
    "max_loss",
)
#: without ``max_loss``, a loss this many times the first step's loss counts as divergence
MAX_LOSS_FACTOR = 1e4
#: floor of the first step's loss in that rule, so that a run starting near 0 is not stopped
MIN_LOSS_REFERENCE = 1e-2


@dataclass
class DataSplit:
    """The samples of one run, loaded and checked before anything is written."""

    split: dict[str, list[str]]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    #: name -> SHA-256 of its image and mask files: a resumed run checks it reads the same data
    hashes: dict[str, list[str]]


def _content_hashes(pairs: list[Pair], expected: dict[str, list[str]] | None) -> dict:
    """SHA-256 of every pair's files; InputError naming a file whose content differs from
    ``expected`` (the hashes a run was trained with)."""
    hashes = {p.name: [file_sha256(p.image), file_sha256(p.mask)] for p in pairs}
    for pair in pairs:
        if expected and pair.name in expected:
            for path, now, then in zip((pair.image, pair.mask), hashes[pair.name],
                                       expected[pair.name], strict=True):  # fmt: skip
                if now != then:
                    raise InputError(
                        "differs from the file this run was trained on (same name, other "
                        "content); resume with the run's own data",
                        path,
                    )
    return hashes


def load_data_split(
    cfg: SegTrainConfig,
    split: dict[str, list[str]] | None,
    progress: bool,
    expected_hashes: dict[str, list[str]] | None = None,
) -> DataSplit:
    """Find the pairs, make (or reuse) the split and load every sample of it.

    ``expected_hashes`` (on resume): the content hashes saved with the run; a file whose
    content changed under its name is refused.
    """
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

    used = [by_name[n] for part in split.values() for n in part]
    hashes = _content_hashes(used, expected_hashes)
    data = DataSplit(split, load("train"), load("val"), load("test"), hashes)
    for part, samples in (("training", data.train), ("validation", data.val),
                          ("test", data.test)):  # fmt: skip
        if samples and not any(s.labels.any() for s in samples):
            raise InputError(
                f"no cell in any of the {len(samples)} {part} masks; a segmenter can neither "
                "learn from nor be scored on masks that are all background",
                cfg.data,
            )
    ref = data.train[0].image.shape[0]
    for s in data.val + data.test:
        if s.image.shape[0] != ref:
            raise InputError(
                f"{s.name} has {s.image.shape[0]} channel(s), training images have {ref}"
            )
    return data


def load_extra(cfg: SegTrainConfig, channels: int, progress: bool) -> list[Sample]:
    """The extra training pairs of ``cfg.extra`` (none without it), checked against the data."""
    if cfg.extra is None:
        return []
    if inside(cfg.extra, cfg.data) or inside(cfg.data, cfg.extra):
        raise InputError(
            f"extra pairs overlap the data set {cfg.data} (its validation and test images would "
            "be trained on); give a folder of other pairs",
            cfg.extra,
        )
    pairs = find_pairs(cfg.extra, "auto", cfg.mask_suffix, cfg.image_suffix)
    samples = load_samples(pairs, parse_channels(cfg.channels), progress, "loading extra")
    for s in samples:
        if s.image.shape[0] != channels:
            raise InputError(
                f"extra pair {s.name} has {s.image.shape[0]} channel(s), training images have "
                f"{channels}",
                cfg.extra,
            )
    return samples


class TrainerBase:
    """One training run. Subclasses set ``kind`` and ``loss_columns`` and implement the hooks."""

    kind: str = ""
    loss_columns: tuple[str, ...] = ("loss",)

    def __init__(
        self,
        cfg: SegTrainConfig,
        data: DataSplit,
        *,
        extra: Sequence[Sample] = (),
        resume_state: dict[str, Any] | None = None,
        progress: bool = True,
    ):
        """A run of ``cfg`` on ``data`` (:func:`load_data_split`). Nothing is written until
        :meth:`run`, so a trainer (and a step of it) also works in memory, without a run folder.
        """
        self.cfg = cfg
        self.mode: InstanceMode = mode(str(cfg.instances))  # how its output becomes cells
        self.run_dir = Path(cfg.out)
        self.rank, self.device = distributed.setup(resolve_device(cfg.device))
        self.progress = progress and self.rank.main
        self.data, self.extra = data, list(extra)
        self.train_diameter: float | None = None  # measured when cells are rescaled
        if cfg.cell_diameter:
            self._rescale_training_cells(cfg.cell_diameter)
        self.in_channels = self.data.train[0].image.shape[0]
        self.amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
        self.scale_grads = self.amp and cfg.amp_dtype == "fp16"  # bf16 needs no loss scaling
        self.step = 0
        self.early = EarlyStopping(cfg.patience)
        self.rollbacks = Rollbacks(
            cfg.on_divergence == "rollback", cfg.max_rollbacks, cfg.rollback_lr_factor
        )
        self.loss_reference: float | None = None  # the first step's loss, for max_loss
        torch.manual_seed(cfg.seed)
        self.resuming = resume_state is not None  # build() need not load starting weights
        self.build()
        if resume_state:
            self._restore(resume_state)
        self.train_loader = self.loader()  # built now: a batch size that does not shard is refused

    def _rescale_training_cells(self, target: float) -> None:
        """Training (and extra) images rescaled so their cells are ``target`` px across; the
        training set's own diameter is kept for validation, testing and ``segment``."""
        measured = median_diameter(self.data.train)
        if measured <= 0:
            raise InputError("no cell in the training masks to measure a diameter on")
        self.train_diameter = measured
        self.data = dataclasses.replace(
            self.data, train=[to_diameter(s, target, measured) for s in self.data.train]
        )
        self.extra = [to_diameter(s, target, measured) for s in self.extra]

    @classmethod
    def from_config(cls, cfg: SegTrainConfig, progress: bool = False) -> TrainerBase:
        """A fresh trainer of ``cfg`` with its data read (benchmarks, notebooks): nothing is
        written; :meth:`train_step` runs in memory."""
        data = load_data_split(cfg, None, progress)
        extra = load_extra(cfg, data.train[0].image.shape[0], progress)
        return cls(cfg, data, extra=extra, progress=progress)

    # --- hooks for subclasses -------------------------------------------------------------
    def build(self) -> None:
        """Create networks, optimisers, schedulers and scalers."""
        raise NotImplementedError

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached loss terms keyed by ``loss_columns``."""
        raise NotImplementedError

    @property
    def segmenter(self) -> torch.nn.Module:
        raise NotImplementedError

    def state_objects(self) -> dict[str, Any]:
        """Every object ``last.pt`` must hold to resume, by checkpoint key: networks,
        optimisers, schedules, scalers, random generators (saved and restored by
        :func:`cganseg.checkpoint.state_entries` / :func:`~cganseg.checkpoint.restore_state`)."""
        raise NotImplementedError

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Refuse, in one line, a ``last.pt`` this trainer cannot continue exactly."""

    def best_extras(self) -> dict[str, Any]:
        """Extra entries of ``best.pt`` (e.g. the generator) besides the segmenter."""
        return {}

    def on_checkpoint(self) -> None:
        """Called after each validation checkpoint (e.g. to write sample grids)."""

    def after_step(self) -> None:
        """Called after every training step (e.g. for periodic sample grids)."""

    def current_lr(self) -> float:
        raise NotImplementedError

    def lr_schedulers(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """Every learning-rate schedule (with its optimiser), for divergence rollbacks."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by name, whose weights must stay finite."""
        return {"segmenter": self.segmenter}

    # --- pieces for the subclasses' build() ----------------------------------------------
    def new_segmenter(self) -> nn.Module:
        """The configured segmenter on the device, with global BatchNorm when distributed."""
        cfg = self.cfg
        out = self.mode.output_channels(cfg.n_classes)
        net = build_segmenter(cfg.model, self.in_channels, out, cfg.width)
        return distributed.sync_batchnorm(net.to(self.device), self.device)

    def segmentation_loss(self) -> nn.Module:
        """The instance mode's loss (CE + Dice, whose sums cover the global batch when
        distributed, or Cellpose's loss for the flow output)."""
        return self.mode.loss(distributed.sum_across if self.rank.distributed else None)

    def as_segmenter(self, model: nn.Module) -> Segmenter:
        """``model`` with this run's post-processing, as ``cganseg segment`` would run it."""
        return Segmenter(model, None, self.cfg.postprocessing(self.train_diameter), self.device)

    def adam(self, params, **kwargs: Any) -> torch.optim.Adam:
        """Adam, with fused kernels unless ``fused_adam`` is off."""
        return torch.optim.Adam(params, fused=self.cfg.fused_adam, **kwargs)

    def training_pass(self, net: nn.Module) -> nn.Module:
        """What a training step calls for ``net``: laid out, DDP-wrapped, compiled as configured.

        ``net`` itself (what checkpoints and validation use) keeps sharing the parameters.
        """
        if self.cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        wrapped = distributed.data_parallel(net, self.device)
        return torch.compile(wrapped) if self.cfg.compile else wrapped

    def autocast(self) -> torch.autocast:
        """Mixed precision for a training pass (CUDA only, ``amp_dtype``)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 autocast; disabled (a pass-through) otherwise."""
        return torch.amp.GradScaler("cuda", enabled=self.scale_grads)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the training device, in the configured memory layout."""
        batch = batch.to(self.device, non_blocking=True)
        if self.cfg.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    # --- the shared loop ------------------------------------------------------------------
    def _payload(self, full: bool) -> dict[str, Any]:
        post = self.cfg.postprocessing(self.train_diameter)
        payload = segmenter_payload(self.segmenter, self.cfg.channels, post)
        payload.update(kind=self.kind, step=self.step, config=self.cfg.to_dict())
        payload.update(self.best_extras())
        if full:
            payload.update(state_entries(self.state_objects()))
            payload.update(self.early.state_dict())
            payload.update(self.rollbacks.state_dict())
            payload.update(
                torch_rng=torch.get_rng_state(),
                split=self.data.split,
                loss_reference=self.loss_reference,
                data_hashes=self.data.hashes,
            )
        return payload

    def _restore(self, state: dict[str, Any]) -> None:
        """Take up the training state of a ``last.pt`` payload (resume and rollback)."""
        self.check_resumable(state)
        restore_state(self.state_objects(), state, self.run_dir / "last.pt")
        self.step = state["step"]
        self.early.load_state_dict(state)
        self.rollbacks.load_state_dict(state)
        self.loss_reference = state.get("loss_reference")
        torch.set_rng_state(state["torch_rng"])

    def save_last(self) -> None:
        save_checkpoint(self.run_dir / "last.pt", self._payload(full=True))

    def batches_per_step(self) -> int:
        """Batches of ``batch_size`` crops that one :meth:`train_step` consumes (they come as one
        tensor of ``batches_per_step() * batch_size`` crops)."""
        return 1

    def loader(self) -> DataLoader:
        cfg = self.cfg
        aug = ConventionalAugment(p_vanilla=cfg.p_vanilla)
        samples = self.data.train + self.extra
        self.mode.prepare()  # once here, not in every loader worker
        targets = functools.partial(self.mode.targets, n_classes=cfg.n_classes)
        dataset = CropDataset(samples, tuple(cfg.crop), targets, aug)
        batch = cfg.batch_size * self.batches_per_step()
        if self.extra:
            n_real = len(self.data.train)
            fraction = cfg.extra_fraction
            if fraction is None:
                fraction = len(self.extra) / len(samples)
            sampler: SeededSampler | MixedSampler = MixedSampler(
                n_real, len(self.extra), batch, fraction, cfg.seed, self.step
            )
        else:
            sampler = SeededSampler(len(dataset), cfg.seed, start=self.step * batch)
        rank = self.rank
        if rank.distributed:
            sampler = ShardSampler(sampler, batch, rank.rank, rank.world)
        return DataLoader(
            dataset,
            batch_size=batch // rank.world,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # keep the global RNG untouched, so resume is exact
            worker_init_fn=ignore_stop_signals,  # stops are the main process's to take
        )

    def validate(self) -> dict[str, float]:
        if not self.data.val:
            return {}
        return validate_segmenter(
            self.as_segmenter(self.segmenter), self.data.val, tile_size=self.cfg.tile_size
        )

    def checkpoint(self, metrics: dict[str, float]) -> bool:
        """Save last.pt (and best.pt when improved); True when early stopping says stop."""
        if self.early.update(metrics.get("val_f1_iou50")):
            save_checkpoint(self.run_dir / "best.pt", self._payload(full=False))
        self.save_last()
        self.on_checkpoint()
        return self.early.should_stop

    def _diverged(self, reason: str) -> TrainingDiverged:
        last = self.run_dir / "last.pt"
        if not last.is_file():
            return TrainingDiverged(
                reason,
                "training stopped; no checkpoint was saved yet, so start again with a lower "
                "learning rate (--lr) or without mixed precision (--no-amp)",
            )
        return TrainingDiverged(
            reason,
            f"training stopped, last good checkpoint kept in {last} (resume with "
            "--on-divergence rollback to go on at lower learning rates, or try --no-amp)",
        )

    def max_loss(self) -> float:
        """The loss above which training counts as diverged (``max_loss``, else
        :data:`MAX_LOSS_FACTOR` times the first step's loss)."""
        if self.cfg.max_loss is not None:
            return self.cfg.max_loss
        return MAX_LOSS_FACTOR * max(self.loss_reference or 0.0, MIN_LOSS_REFERENCE)

    def _check_finite(self, values: dict[str, float]) -> None:
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            name, value = next(iter(bad.items()))
            raise self._diverged(f"{name} became {value} by step {self.step}")
        limit = self.max_loss()
        if values.get("loss", 0.0) > limit:
            raise self._diverged(
                f"loss {values['loss']:.3g} exploded past max_loss {limit:.3g} by step "
                f"{self.step}"
            )

    def _check_weights(self) -> None:
        """Refuse to checkpoint non-finite weights (a loss can stay finite while they are not)."""
        for net_name, net in self.networks().items():
            for name, param in net.named_parameters():
                if not torch.isfinite(param).all():
                    raise self._diverged(
                        f"weights of the {net_name} ({name}) became NaN/inf by step {self.step}"
                    )

    def _roll_back(self, exc: TrainingDiverged) -> bool:
        """Go back to ``last.pt`` with the learning rates lowered, if the run allows it."""
        path = self.run_dir / "last.pt"
        if not self.rollbacks.available:
            return False
        distributed.barrier()  # rank 0's last.pt is complete before anyone reads it
        state = load_checkpoint(path, map_location=self.device)
        self._restore(state)
        ratio = self.rollbacks.take()
        for sched in self.lr_schedulers():
            sched.base_lrs = [lr * ratio for lr in sched.base_lrs]
            for group in sched.optimizer.param_groups:
                group["lr"] *= ratio
        self.train_loader = self.loader()  # the data stream from the restored step
        if self.rank.main:
            tqdm.write(
                f"{exc.reason}: rolled back to step {self.step}, learning rates x"
                f"{self.rollbacks.lr_scale:g} (rollback {self.rollbacks.count} of "
                f"{self.rollbacks.allowed})"
            )
        return True

    def _stop_asked(self, log_step: bool) -> bool:
        """A signal asked to stop; processes agree on it at logging steps (one collective)."""
        asked = requested() is not None
        if not self.rank.distributed:
            return asked
        return log_step and distributed.any_across(asked, self.device)

    def _mean_terms(
        self, sums: dict[str, torch.Tensor], counts: dict[str, int]
    ) -> dict[str, float]:
        """Loss terms averaged over the steps that computed them (``counts``) and over all
        processes (one host sync); a term can be absent in some steps (a cGAN-Seg warm-up)."""
        means = distributed.mean_across(torch.stack([v.float() / counts[k]
                                                     for k, v in sums.items()]))  # fmt: skip
        return dict(zip(sums, means.tolist(), strict=True))

    def describe(self) -> str:
        """One line on what this run is: device, networks and sizes, data, crops (printed when
        training starts, so a wrong device or a huge network shows at once)."""
        cfg = self.cfg
        n = torch.get_num_threads()
        threads = f", {n} thread{'s' if n != 1 else ''}" if self.device.type == "cpu" else ""
        nets = ", ".join(f"{name} {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M"
                         for name, net in self.networks().items())  # fmt: skip
        return (f"{self.kind} on {self.device}{threads}; {cfg.model} width {cfg.width} "
                f"({cfg.instances}); parameters: {nets}; images: {len(self.data.train)} train, "
                f"{len(self.data.val)} validation, {len(self.data.test)} test; crops "
                f"{cfg.crop[0]}x{cfg.crop[1]}, batch {cfg.batch_size}; preset {cfg.preset}")

    def run(self) -> dict[str, Any]:
        """Train to ``iterations`` (or an early stop); then :meth:`finish`."""
        main = self.rank.main
        if main and self.cfg.on_divergence == "rollback" and self.step == 0:
            self.save_last()  # a state to roll back to before the first validation
        if self.progress:
            tqdm.write(self.describe())
        bar = tqdm(
            total=self.cfg.iterations,
            initial=self.step,
            desc=self.kind,
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            while True:
                try:
                    stopped_early = self._train(bar)
                    break
                except TrainingDiverged as exc:
                    if not self._roll_back(exc):
                        raise
                    bar.n = self.step
                    bar.refresh()
        finally:
            bar.close()
        if stopped_early and main:
            tqdm.write(
                f"early stopping at step {self.step}: no better validation F1 in "
                f"{self.cfg.patience} validations"
            )
        return self.finish()

    def _train(self, bar: tqdm) -> bool:
        """Steps from ``self.step`` on; True when early stopping ended them."""
        cfg, main = self.cfg, self.rank.main
        log = None
        if main:
            log = RunLog(
                self.run_dir, [*self.loss_columns, *VAL_COLUMNS], resume_step=self.step or None
            )
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        stopped_early = False
        batches = iter(self.train_loader)
        postfix: dict[str, str] = {}
        pace = Pace(self.step, cfg.iterations)
        try:
            while self.step < cfg.iterations and not stopped_early:
                terms = self.train_step(*next(batches))
                self.step += 1
                if self.progress:
                    pace.tick(self.step)
                if self.loss_reference is None:  # one host sync, once per run
                    first = self._mean_terms({"loss": terms["loss"]}, {"loss": 1})
                    self.loss_reference = first["loss"]
                for k, v in terms.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                    counts[k] = counts.get(k, 0) + 1
                bar.update(1)
                if main:
                    self.after_step()
                values: dict[str, float] = {}
                last = self.step == cfg.iterations
                log_step = self.step % cfg.log_every == 0 or last
                if log_step:
                    values = self._mean_terms(sums, counts)
                    sums, counts = {}, {}
                    self._check_finite(values)
                    postfix["loss"] = f"{values['loss']:.4f}"
                if self.step % cfg.val_every == 0 or last:
                    self._check_weights()
                    stop = False
                    if main:
                        values.update(self.validate())
                        stop = self.checkpoint(values)
                    stopped_early = distributed.any_across(stop, self.device)
                    if "val_f1_iou50" in values:
                        postfix["val F1@0.5"] = f"{values['val_f1_iou50']:.3f}"
                if values and log is not None:
                    log.log(self.step, values, {"lr": self.current_lr()})
                    bar.set_postfix(postfix)
                if not last and self._stop_asked(log_step):
                    self._check_weights()
                    if main:
                        self.save_last()
                    signum = requested() or signal.SIGTERM
                    raise Interrupted(
                        f"stopped at step {self.step} ({signum.name}); last.pt saved, --resume "
                        "goes on from there",
                        signum,
                    )
        finally:
            # shut the loader's worker processes down now, on an error too: the traceback would
            # keep the iterator alive, and its workers (which ignore SIGTERM) would then block
            # the interpreter's exit for ever
            batches = None  # noqa: F841
            if log is not None:
                log.close()
        return stopped_early

    def finish(self) -> dict[str, Any]:
        """Evaluate best.pt on the test split (if any) and return a summary."""
        summary: dict[str, Any] = {"step": self.step, "best_val_f1_iou50": self.early.best}
        tune = self.mode.threshold_grid and self.cfg.tune_thresholds and self.data.val
        if (self.data.test or tune) and self.rank.main:
            best = load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
            self.segmenter.load_state_dict(best["model_state"])
            seg = self.as_segmenter(self.segmenter)
            if tune:
                tuned = tune_thresholds(seg, self.data.val, self.cfg.tile_size)
                post = seg.post.replace(**{k: tuned[k] for k in self.mode.threshold_grid})
                seg = dataclasses.replace(seg, post=post)
                save_checkpoint(self.run_dir / "best.pt", {**best, POST_ENTRY: post.entry(),
                                                           "val_mean_f1": tuned["val_mean_f1"]})
                summary["postprocessing"] = tuned
        if self.data.test and self.rank.main:
            report = evaluate_pairs(self._test_pairs(seg))
            write_report(report, self.run_dir / "test")
            summary["test_f1_iou50"] = report["per_image"]["f1"][0]
        return summary

    def _test_pairs(self, seg: Segmenter) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, truth, prediction) of each test image; a stop asked for ends it between two
        images (``--resume`` of the finished run tests again)."""
        for s in self.data.test:
            yield s.name, s.labels, seg.segment(s.image, tile_size=self.cfg.tile_size)
            check("stopped while testing best.pt after the last step; --resume tests again")


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
    return type(saved).from_dict(merged)


def run_training(
    trainer_cls: type[TrainerBase],
    cfg: SegTrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start (or resume) a run of ``trainer_cls``; returns its summary dict.

    ``given``: on resume, the options the user passed explicitly; only
    :data:`RESUMABLE_OVERRIDES` may differ from the saved config.
    """
    cfg.check()
    run_dir = Path(cfg.out)
    main = distributed.from_env().main
    if main:
        check_writable(run_dir)
    lock = folder_lock(run_dir, trainer_cls.kind) if main else contextlib.nullcontext()
    with lock:
        return _run_locked(trainer_cls, cfg, run_dir, resume, progress, given or {})


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def with_absolute_paths(cfg: ConfigT) -> ConfigT:
    """``cfg`` with its file and folder options absolute: the run stays usable from any
    working directory."""
    paths = {f.name: _absolute(getattr(cfg, f.name))
             for f in dataclasses.fields(cfg) if f.name in PATH_OPTIONS}  # fmt: skip
    return dataclasses.replace(cfg, **paths)


def resumed_config(
    cfg_cls: type[SegTrainConfig], state: dict[str, Any], run_dir: Path, given: dict[str, Any]
) -> SegTrainConfig:
    """The saved config of a run being resumed, re-rooted: the run is the folder it was given
    (a copied run resumes in its copy), and ``--data`` replaces a data folder that moved."""
    saved = cfg_cls.from_dict(state["config"])
    saved.out = _absolute(str(run_dir))
    if given.get("data"):
        saved.data = _absolute(given["data"])
    elif not Path(saved.data).is_dir():
        raise InputError(
            "data folder not found (moved or renamed?); resume with --data NEW_PLACE, which is "
            "checked file by file against the run's data",
            saved.data,
        )
    return merge_resume_config(saved, given)


def _run_locked(
    trainer_cls: type[TrainerBase],
    cfg: SegTrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    given: dict[str, Any],
) -> dict[str, Any]:
    main = distributed.from_env().main
    state = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise InputError("nothing to resume: no last.pt in the run folder", run_dir)
        state = load_checkpoint(run_dir / "last.pt")
        if state.get("kind") != trainer_cls.kind:
            raise InputError(
                f"last.pt is a {state.get('kind')} checkpoint, not {trainer_cls.kind}",
                run_dir / "last.pt",
            )
        cfg = resumed_config(type(cfg), state, run_dir, given)
        if main:
            tqdm.write(f"resuming {run_dir} from step {state['step']}")
    elif (run_dir / "last.pt").exists():
        raise InputError(
            "already holds a training run; add --resume or choose another --out", run_dir
        )
    else:  # paths absolute; the device and the width as resolved, so config.yaml says what
        # was used
        width = DEFAULT_WIDTHS[cfg.model] if cfg.width is None else cfg.width
        device = str(resolve_device(cfg.device))
        cfg = dataclasses.replace(with_absolute_paths(cfg), width=width, device=device)
    loading = progress and main
    data = load_data_split(
        cfg,
        state["split"] if state else None,
        loading,
        state.get("data_hashes") if state else None,
    )
    extra = load_extra(cfg, data.train[0].image.shape[0], loading)
    try:
        trainer = trainer_cls(cfg, data, extra=extra, resume_state=state, progress=progress)
        if main:  # (the run folder exists: its lock made it)
            cfg.save(run_dir / "config.yaml")
            save_split(run_dir / "split.json", trainer.data.split)
        with graceful_stop():
            return trainer.run()
    finally:
        distributed.teardown()
