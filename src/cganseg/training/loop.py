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

import functools
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cganseg.checkpoint import SEGMENTER, load_into, save_checkpoint
from cganseg.data.augment import ConventionalAugment
from cganseg.data.dataset import (
    CropDataset,
    MixedSampler,
    Sample,
    SeededSampler,
    ShardSampler,
    make_image_targets,
)
from cganseg.errors import InputError, TrainingDiverged
from cganseg.inference.segment import Segmenter
from cganseg.instances import InstanceMode, mode
from cganseg.instances.postprocessing import PostProcessing
from cganseg.models.registry import build_segmenter
from cganseg.options import SegTrainConfig
from cganseg.runtime import distributed
from cganseg.runtime.device import resolve_device
from cganseg.runtime.interrupt import (
    Interrupted,
    ignore_stop_signals,
    requested,
)
from cganseg.runtime.progress import progress_bar
from cganseg.training import run_state
from cganseg.training.divergence import DivergenceGuard
from cganseg.training.final import tune_and_test
from cganseg.training.pace import Pace, cpu_minutes, estimate_cpu_s
from cganseg.training.passes import TrainingPasses
from cganseg.training.run_data import DataSplit, load_data_split, load_extra, rescale_cells
from cganseg.training.run_log import RunLog
from cganseg.training.stopping import EarlyStopping, Rollbacks
from cganseg.training.validation import VAL_COLUMNS, validate_segmenter


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
            self.data, self.extra, self.train_diameter = rescale_cells(
                self.data, self.extra, cfg.cell_diameter)
        self.in_channels = self.data.train[0].image.shape[0]
        self.passes = TrainingPasses(cfg, self.device)  # AMP, layout, DDP, compile
        self.step = 0
        self.early = EarlyStopping(cfg.patience)
        self.rollbacks = Rollbacks(
            cfg.on_divergence == "rollback", cfg.max_rollbacks, cfg.rollback_lr_factor
        )
        self.guard = DivergenceGuard(self.run_dir, cfg.max_loss)  # NaN/inf, exploding loss
        torch.manual_seed(cfg.seed)
        self.resuming = resume_state is not None  # build() need not load starting weights
        self.build()
        if resume_state:
            run_state.restore(self, resume_state)
        self.train_loader = self.loader()  # built now: a batch size that does not shard is refused

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

    #: validate the start model (``init_seg``) before the first step, so that ``best.pt`` is the
    #: start unless training beats it on validation (:meth:`_validate_start`); not in the joint
    #: game, whose ``best.pt`` also holds the generator, untrained at step 0
    guards_start = True

    @classmethod
    def validates_start(cls, cfg: SegTrainConfig) -> bool:
        """Whether a run of ``cfg`` guards a start model (validates it before the first step
        and keeps it unless a step beats it), given validation images."""
        return cls.guards_start and bool(cfg.init_seg)

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

    def start_segmenter(self, net: nn.Module, start: str) -> None:
        """``net``'s weights from a trained segmenter (``init_seg``: a shipped model, run folder
        or checkpoint; fine-tuning), which must be the same network with outputs that mean the
        same (:func:`cganseg.training.settings.with_start` makes a run's settings so)."""
        payload = load_into(start, SEGMENTER, net)
        post = PostProcessing.from_checkpoint(payload, self.cfg.n_classes, start)
        for key in ("instances", "cell_diameter"):
            stored, ours = getattr(post, key), getattr(self.cfg, key)
            if stored != ours:
                raise InputError(f"its segmenter was trained with {key} {stored}, this run has "
                                 f"{ours}: give the same --{key.replace('_', '-')}",
                                 start)  # fmt: skip

    def segmentation_loss(self) -> nn.Module:
        """The instance mode's loss (CE + Dice, whose sums cover the global batch when
        distributed, or Cellpose's loss for the flow output)."""
        return self.mode.loss(distributed.sum_across if self.rank.distributed else None)

    def as_segmenter(self, model: nn.Module) -> Segmenter:
        """``model`` with this run's post-processing, as ``cganseg segment`` would run it."""
        return Segmenter(model, None, self.cfg.postprocessing(self.train_diameter), self.device)

    # --- the shared loop ------------------------------------------------------------------
    def save_last(self) -> None:
        run_state.save_last(self)

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
        vector = self.mode.image_target_vector
        made = None if vector is None else make_image_targets(
            samples, tuple(cfg.crop), targets, self.progress)  # fmt: skip
        dataset = CropDataset(samples, tuple(cfg.crop), targets, aug, made, vector)
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

    def metric_columns(self) -> list[str]:
        """The columns of ``metrics.csv`` after ``step``: the loss terms, then what validation
        measures."""
        return [*self.loss_columns, *VAL_COLUMNS]

    def validate(self) -> dict[str, float]:
        if not self.data.val:
            return {}
        return validate_segmenter(
            self.as_segmenter(self.segmenter), self.data.val, tile_size=self.cfg.tile_size
        )

    def checkpoint(self, metrics: dict[str, float]) -> bool:
        """Save last.pt (and best.pt when improved); True when early stopping says stop."""
        if self.early.update(metrics.get("val_f1_iou50")):
            save_checkpoint(self.run_dir / "best.pt", run_state.payload(self, full=False))
        self.save_last()
        self.on_checkpoint()
        return self.early.should_stop

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
                f"{cfg.crop[0]}x{cfg.crop[1]}, batch {cfg.batch_size}"
                + (f"; preset {cfg.preset}" if cfg.preset else "")
                + (f"; starts from {cfg.init_seg}" if cfg.init_seg else "")
                + ("" if self.data.val else "; no validation images: the last step is kept")
                + self._cost())

    def _cost(self) -> str:
        """``; ~N CPU-minutes estimated for S steps`` on a CPU (:func:`estimate_cpu_s`; a
        GPU's pace line says its own), empty when no step is left."""
        left = self.cfg.iterations - self.step
        if self.device.type != "cpu" or left <= 0:
            return ""
        cost = estimate_cpu_s(self.kind, self.cfg, left)
        return f"; {cpu_minutes(cost)} estimated for {left} steps"

    def run(self) -> dict[str, Any]:
        """Train to ``iterations`` (or an early stop); then :meth:`finish`."""
        main = self.rank.main
        if main and self.cfg.on_divergence == "rollback" and self.step == 0:
            self.save_last()  # a state to roll back to before the first validation
        if self.progress:
            tqdm.write(self.describe())
        bar = progress_bar(
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
                    if not run_state.roll_back(self, exc):
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
                self.run_dir, self.metric_columns(), resume_step=self.step or None
            )
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        stopped_early = False
        batches = iter(self.train_loader)
        postfix: dict[str, str] = {}
        if main and self.step == 0 and self.validates_start(self.cfg) and self.data.val:
            self._validate_start(log)
        pace = Pace(self.step, cfg.iterations)
        try:
            while self.step < cfg.iterations and not stopped_early:
                terms = self.train_step(*next(batches))
                self.step += 1
                if self.progress:
                    pace.tick(self.step)
                if self.guard.reference is None:  # one host sync, once per run
                    first = distributed.mean_terms({"loss": terms["loss"]}, {"loss": 1})
                    self.guard.reference = first["loss"]
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
                    values = distributed.mean_terms(sums, counts)
                    sums, counts = {}, {}
                    self.guard.check_losses(values, self.step)
                    postfix["loss"] = f"{values['loss']:.4f}"
                if self.step % cfg.val_every == 0 or last:
                    self.guard.check_weights(self.networks(), self.step)
                    stop = False
                    if main:
                        values.update(self.validate())
                        stop = self.checkpoint(values)
                    stopped_early = distributed.any_across(stop, self.device)
                    if "val_f1_iou50" in values:
                        postfix["val F1@0.5"] = f"{values['val_f1_iou50']:.3f}"
                if values and log is not None:
                    log.log(self.step, values, {"lr": self.current_lr()})
                    bar.set_postfix(postfix, refresh=False)  # drawn with the next step
                if not last and _stop_asked(self.rank, self.device, log_step):
                    self.guard.check_weights(self.networks(), self.step)
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

    def _validate_start(self, log: RunLog | None) -> None:
        """Fine-tuning's guard: the start model is validated before the first step, so
        ``best.pt`` stays the start unless a trained step scores better on the validation
        images. Few images can make a good start worse (benchmarks/fewshot.py: on DSB nuclei
        every fine-tuned run scored below its start), and the checkpoint rule that picks the
        best step can then also pick "no step"."""
        values = self.validate()
        self.checkpoint(values)
        if log is not None:
            log.log(0, values)
        if self.progress:
            tqdm.write(f"start model {self.cfg.init_seg}: validation F1@0.5 "
                       f"{values['val_f1_iou50']:.3f} (best.pt stays the start unless a step "
                       "beats it)")  # fmt: skip

    def finish(self) -> dict[str, Any]:
        """The end of the run (thresholds tuned, best.pt tested); returns its summary."""
        return tune_and_test(self)


def _stop_asked(rank: distributed.Rank, device: torch.device, log_step: bool) -> bool:
    """A signal asked to stop; processes agree on it at logging steps (one collective)."""
    asked = requested() is not None
    if not rank.distributed:
        return asked
    return log_step and distributed.any_across(asked, device)
