"""cGAN-Seg training: the segmenter trains inside a CycleGAN with a mask -> image generator.

Paper Fig. 1A, Eq. 1 and 6-17. Per step, on a batch of real (image, mask) pairs:

- forward cycle: mask -> Gen -> fake image -> Seg -> reconstructed mask (Rec_S: CE + Dice);
- backward cycle: image -> Seg -> fake mask -> Gen -> reconstructed image (Rec_G: L1 + VGG);
- identity terms on the real pairs: Id_G = L1 + VGG(image, Gen(mask)), Id_S = CE + Dice(mask,
  Seg(image));
- adversarial terms (LSGAN): D1 judges DiffAugment-ed images, D2 judges masks;
- one update of Gen and Seg on Eq. 16, then one update of D1 and D2 on Eq. 17.

Every forward pass is computed once and reused by all terms that need it (Gen(mask) feeds D1_G,
Id_G and Rec_S; Seg(image) feeds D2_S, Id_S and Rec_G). The segmenter's output reaches D2 and
Gen as in the public reference code, an argmax one-hot through which no gradient flows
(``seg_to_gen: argmax``, default), or differentiably: as softmax probabilities (``soft``) or a
straight-through hard mask.
Masks enter the networks as one-hot class maps (background / cell [/ boundary]).

With ``instances: flows`` (issue 16) the segmenter outputs Cellpose's flows and cell-probability
logit, and the mapping is: Id_S and Rec_S are Cellpose's loss against the flow targets of the
real masks (computed from the label images, like the class targets); Gen still receives a
one-hot class mask, background/cell, made from the label image for the real masks and from
the cell probability ``sigmoid(logit)`` (as [1 - p, p], soft, argmax or straight-through as
``seg_to_gen`` says) for Seg's output; D2 judges those two-channel probability maps.

Recipe levers (issue 17, all off by default, i.e. the paper's recipe): Seg can start from a
trained segmenter (``init_seg``), or from a conventional pre-training that the run does first
(``seg_pretrain``, :mod:`cganseg.training.pretrain`); the cycle and adversarial weights can
wait for a warm-up on the paired terms and then ramp up (``warmup_gen``, ``ramp_steps``,
:func:`cganseg.training.schedule.cycle_factor`); Seg can take extra Id_S-only steps on further
real batches (``seg_extra_updates``); validation can use a moving average of Seg
(``seg_ema``, :mod:`cganseg.training.ema`); each network can have its own Adam betas; the
perceptual loss can be cheaper (``perceptual_depth``, ``perceptual_scale``). The generator's
samples, checkpoints and ``generate`` can use a moving average of Gen (``gen_ema``, issue 31, as
StyleGAN's generators), and each validation can also score the generator (``val_fid``: FID/KID
of its images of the validation masks, :class:`cganseg.evaluation.fid.HeldOutFid`).

Validation, checkpoints, early stopping, resume and the test evaluation come from the shared loop;
``last.pt`` holds all four networks, the three optimisers and schedules, both grad scalers, the
generators of DiffAugment and of the style/noise draws, and the history pools.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from cganseg.augment.diffaugment import apply_policy, sample_policy
from cganseg.checkpoint import GENERATOR, network_entries
from cganseg.data.dataset import pad_to_at_least
from cganseg.data.targets import one_hot
from cganseg.errors import InputError
from cganseg.evaluation.fid import HeldOutFid
from cganseg.inference.generate import Generator
from cganseg.instances import InstanceMode
from cganseg.losses.adversarial import lsgan_loss
from cganseg.losses.cgan_objective import (
    D_TERMS,
    GS_TERMS,
    discriminator_loss,
    generator_segmenter_loss,
)
from cganseg.losses.image_loss import ImageLoss
from cganseg.losses.perceptual import available_perceptual, build_perceptual
from cganseg.models.discriminator import PatchDiscriminator
from cganseg.models.fid_inception import find_fid_weights, load_fid_features
from cganseg.models.generator import StyleUNet
from cganseg.options import SEG_PRETRAIN_DIR, CGanTrainConfig
from cganseg.reports.grid import save_grid
from cganseg.reports.overlays import generation_row, overlay_labels
from cganseg.training.ema import copy_buffers, ema_with_warmup
from cganseg.training.image_pool import ImagePool
from cganseg.training.loop import TrainerBase
from cganseg.training.pace import cpu_minutes, estimate_cpu_s
from cganseg.training.pretrain import pretrain_config, pretrain_segmenter
from cganseg.training.run import run_training
from cganseg.training.schedule import cycle_factor, make_scheduler

N_SAMPLE_ROWS = 4
FID_COLUMNS = ("val_fid", "val_kid")


def mask_for_generator(output: torch.Tensor, how: str, mode: InstanceMode) -> torch.Tensor:
    """The segmenter's output as the mask that D2 and Gen see (``how``: see ``seg_to_gen``),
    from the instance mode's class probabilities."""
    probs = mode.class_probabilities(output)
    if how == "soft":
        return probs
    hard = one_hot(probs.argmax(dim=1), probs.shape[1], probs.dtype)
    if how == "argmax":
        return hard
    return hard + probs - probs.detach()  # straight-through


@contextlib.contextmanager
def running_stats_frozen(net: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``net`` keep their running statistics in the block (momentum 0, and
    the batch counter as it was): they still normalise with the batch's own statistics."""
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in layers]  # fmt: skip (a copy on the device: no host sync per step)
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(layers, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _set_requires_grad(modules: list[nn.Module], flag: bool) -> None:
    for p in chain.from_iterable(m.parameters() for m in modules):
        p.requires_grad_(flag)


class CGanTrainer(TrainerBase):
    """Joint training of Gen, Seg, D1 and D2 (cGAN-Seg)."""

    kind = "train"
    guards_start = False  # best.pt also holds the generator, untrained at step 0
    loss_columns = ("loss", "loss_d", *GS_TERMS, *D_TERMS)
    cfg: CGanTrainConfig

    def build(self) -> None:
        cfg, dev = self.cfg, self.device
        k = self.mode.mask_classes(cfg.n_classes)  # classes of the masks Gen and D2 see
        self.seg = self.new_segmenter()
        start = cfg.init_seg or (self.run_dir / SEG_PRETRAIN_DIR if cfg.seg_pretrain else None)
        if start and not self.resuming:  # (a resumed run has its own weights)
            self.start_segmenter(self.seg, str(start))
        # the segmenter that validation, best.pt and the test use: Seg, or its moving average
        self.seg_avg = (
            AveragedModel(self.seg, multi_avg_fn=ema_with_warmup(cfg.seg_ema))
            if cfg.seg_ema else None
        )  # fmt: skip
        self.gen = StyleUNet(
            k,
            self.in_channels,
            width=cfg.gen_width,
            style_dim=cfg.style_dim,
            n_mapping=cfg.n_mapping,
        ).to(dev)
        # the generator that samples, --val-fid and the checkpoints hold: Gen or its average
        self.gen_avg = (
            AveragedModel(self.gen, multi_avg_fn=ema_with_warmup(cfg.gen_ema))
            if cfg.gen_ema else None
        )  # fmt: skip
        self.d1 = PatchDiscriminator(
            self.in_channels, cfg.disc_width, cfg.disc_layers, cfg.disc_attention
        ).to(dev)
        self.d2 = PatchDiscriminator(k, cfg.disc_width, cfg.disc_layers, cfg.disc_attention).to(dev)
        # what a training step calls: DDP-wrapped / compiled when so configured, else the network
        self.seg_pass, self.gen_pass, self.d1_pass, self.d2_pass = (
            self.passes.wrap(net) for net in (self.seg, self.gen, self.d1, self.d2)
        )
        perceptual = build_perceptual(cfg.perceptual, cfg.perceptual_weights,
                                      cfg.perceptual_depth, cfg.perceptual_scale)  # fmt: skip
        self.image_loss = ImageLoss(None if perceptual is None else perceptual.to(dev))
        self.seg_loss = self.segmentation_loss()
        self.weights = cfg.loss_weights()

        def betas(own: list[float] | None) -> tuple[float, float]:
            b = cfg.betas if own is None else own
            return (b[0], b[1])

        adam = self.passes.adam
        self.opt_s = adam(self.seg.parameters(), lr=cfg.lr, betas=betas(cfg.betas_seg))
        self.opt_g = adam(self.gen.parameters(), lr=cfg.lr_gen, betas=betas(cfg.betas_gen))
        self.opt_d = adam(chain(self.d1.parameters(), self.d2.parameters()),
                          lr=cfg.lr_disc, betas=betas(cfg.betas_disc))  # fmt: skip
        self.optimizers = {"opt_s": self.opt_s, "opt_g": self.opt_g, "opt_d": self.opt_d}
        self.schedulers = {
            name: make_scheduler(opt, cfg.iterations, cfg.warmup_fraction, cfg.schedule)
            for name, opt in self.optimizers.items()
        }
        # one scaler per backward pass: Gen+Seg share a loss (Eq. 16), D1+D2 share one (Eq. 17)
        self.scaler_gs, self.scaler_d = self.passes.grad_scaler(), self.passes.grad_scaler()
        # styles and noise are drawn where they are used; DiffAugment's policy on the host,
        # where its schedule steers Python (no device-to-host wait per step)
        rng_dev = dev if dev.type == "cuda" else torch.device("cpu")
        self.style_rng = torch.Generator(rng_dev).manual_seed(cfg.seed * 7919 + 1)
        self.aug_rng = torch.Generator().manual_seed(cfg.seed * 7919 + 2)
        self.pool_img = ImagePool(cfg.pool_size, cfg.seed * 7919 + 3)
        self.pool_mask = ImagePool(cfg.pool_size, cfg.seed * 7919 + 4)
        if cfg.val_fid and len(self.data.val) < 2:
            raise InputError(f"--val-fid needs at least 2 validation images, this run has "
                             f"{len(self.data.val)}: give more --val-fraction")  # fmt: skip
        self.held_out: HeldOutFid | None = None  # made at the first validation (--val-fid)

    @property
    def segmenter(self) -> nn.Module:
        return self.seg if self.seg_avg is None else self.seg_avg.module

    @property
    def generator(self) -> nn.Module:
        return self.gen if self.gen_avg is None else self.gen_avg.module

    def batches_per_step(self) -> int:
        return 1 + self.cfg.seg_extra_updates

    def current_lr(self) -> float:
        return self.schedulers["opt_s"].get_last_lr()[0]

    def lr_schedulers(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        return list(self.schedulers.values())

    def networks(self) -> dict[str, nn.Module]:
        return {"segmenter": self.seg, "generator": self.gen, "D1": self.d1, "D2": self.d2}

    def metric_columns(self) -> list[str]:
        return [*super().metric_columns(), *(FID_COLUMNS if self.cfg.val_fid else ())]

    def validate(self) -> dict[str, float]:
        values = super().validate()
        if self.cfg.val_fid:
            values.update(self.generator_fid())
        return values

    def generator_fid(self) -> dict[str, float]:
        """FID and KID of Gen's images of the validation masks against the real validation
        images (``--val-fid``; issue 31: the generator's curve against training time). The
        real images' features are computed once, at the first validation."""
        if self.held_out is None:
            extractor = load_fid_features(None, self.device)
            self.held_out = HeldOutFid(self.data.val, extractor, self.device, self.cfg.seed)
        fakes = self.held_out.generate(Generator(self.generator, self.device).generate)
        result = self.held_out.score(fakes)
        return {"val_fid": result["fid"], "val_kid": result["kid_mean"]}

    def best_extras(self) -> dict[str, Any]:
        return network_entries(GENERATOR, self.generator)

    def state_objects(self) -> dict[str, Any]:
        objects: dict[str, Any] = {
            "model_state": self.seg,
            "generator_state": self.generator,  # what `generate` reads: the average if any
            "d1_state": self.d1,
            "d2_state": self.d2,
            "scaler_gs": self.scaler_gs,
            "scaler_d": self.scaler_d,
            "style_rng": self.style_rng,
            "aug_rng": self.aug_rng,
            "pool_img": self.pool_img,
            "pool_mask": self.pool_mask,
        }
        if self.seg_avg is not None:
            objects["seg_ema_state"] = self.seg_avg
        if self.gen_avg is not None:
            objects["generator_trained_state"] = self.gen
            objects["gen_ema_state"] = self.gen_avg
        for name, opt in self.optimizers.items():
            objects[name] = opt
            objects[f"sched_{name}"] = self.schedulers[name]
        return objects

    def check_resumable(self, state: dict[str, Any]) -> None:
        if state["aug_rng"].numel() != self.aug_rng.get_state().numel():
            # earlier versions drew DiffAugment on the GPU when training there
            raise InputError(
                "last.pt holds a GPU DiffAugment random state of an earlier cganseg version; it "
                "cannot be resumed exactly: start a new run (best.pt works as before)",
                self.run_dir / "last.pt",
            )

    def _generate(self, mask: torch.Tensor) -> torch.Tensor:
        return self.gen_pass(
            mask,
            generator=self.style_rng,
            mix_prob=self.cfg.mix_prob,
            shard=(self.rank.rank, self.rank.world),
        )

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        w = self.weights.ramped(cycle_factor(self.step, cfg.warmup_gen, cfg.ramp_steps))
        everything = cfg.log_unused_terms
        n = images.shape[0] // self.batches_per_step()  # the cGAN batch; the rest: extra Id_S
        x, t = self.passes.to_device(images[:n]), self.passes.to_device(targets[:n])
        m = self.passes.to_device(self.mode.target_mask(t, cfg.n_classes))
        nets = [self.seg, self.gen, self.d1, self.d2]
        for net in nets:
            net.train()
        policy = sample_policy(
            x.shape[0] * self.rank.world,  # drawn for the global batch, this process's rows kept
            cfg.p_diff,
            generator=self.aug_rng,
            device=self.device,
            image_size=tuple(x.shape[-2:]),
            keep=self.rank.rows(x.shape[0]),
        )

        # --- Gen + Seg (Eq. 16); the discriminators are frozen for this pass. A term whose
        # weight is 0 (a warm-up, a cycle switched off) is not computed unless logged
        _set_requires_grad([self.d1, self.d2], False)  # and called unwrapped: no grads to average
        use_d2 = self.d2_matters
        with self.passes.autocast():
            fake_img = self._generate(m)
            terms: dict[str, torch.Tensor] = {}
            if w.rec_s > 0 or everything:
                with self._stats_of_generated():
                    terms["rec_s"] = self.seg_loss(self.seg_pass(fake_img), t)
            seg_logits = self.seg_pass(x)
            fake_mask = mask_for_generator(seg_logits, cfg.seg_to_gen, self.mode)
            if w.rec_g > 0 or everything:
                rec_img = self._generate(fake_mask)
                terms["id_g"], terms["rec_g"] = self.image_loss.multi([fake_img, rec_img], x)
            else:
                terms["id_g"] = self.image_loss(fake_img, x)
            if w.adv_g > 0 or everything:
                terms["d1_g"] = lsgan_loss(self.d1(apply_policy(fake_img, policy)), True)
            if use_d2 and (w.adv_s > 0 or everything):
                terms["d2_s"] = lsgan_loss(self.d2(fake_mask), True)
            terms["id_s"] = self.seg_loss(seg_logits, t)
            loss_gs = generator_segmenter_loss(terms, w)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_s.zero_grad(set_to_none=True)
        self.scaler_gs.scale(loss_gs).backward()
        self.scaler_gs.step(self.opt_g)
        self.scaler_gs.step(self.opt_s)
        self.scaler_gs.update()
        self._extra_seg_updates(images[n:], targets[n:], n, w.id_s)

        # --- D1 + D2 (Eq. 17), on the same DiffAugment policy for real and fake images
        _set_requires_grad([self.d1, self.d2], True)
        old_img = self.pool_img.query(fake_img.detach())
        with self.passes.autocast():
            d_terms = {
                "real_d1": lsgan_loss(self.d1_pass(apply_policy(x, policy)), True),
                "fake_d1": lsgan_loss(self.d1_pass(apply_policy(old_img, policy)), False),
            }
            if use_d2:
                old_mask = self.pool_mask.query(fake_mask.detach())
                d_terms["real_d2"] = lsgan_loss(self.d2_pass(m), True)
                d_terms["fake_d2"] = lsgan_loss(self.d2_pass(old_mask), False)
            loss_d = discriminator_loss(d_terms, w)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        for sched in self.schedulers.values():
            sched.step()
        if self.seg_avg is not None:
            self.seg_avg.update_parameters(self.seg)
            copy_buffers(self.seg_avg.module, self.seg)
        if self.gen_avg is not None:
            self.gen_avg.update_parameters(self.gen)
            copy_buffers(self.gen_avg.module, self.gen)
        out = {"loss": loss_gs.detach(), "loss_d": loss_d.detach()}
        out.update({k: v.detach() for k, v in {**terms, **d_terms}.items()})
        return out

    def _extra_seg_updates(self, images: torch.Tensor, targets: torch.Tensor, n: int,
                           weight: float) -> None:  # fmt: skip
        """``seg_extra_updates`` steps of Seg on Id_S alone, each on its own ``n`` real crops,
        with Id_S's Eq. 16 weight (Adam's moments see gradients of one scale)."""
        if images.shape[0] == 0:  # (split() would give one empty batch)
            return
        for x, t in zip(images.split(n), targets.split(n), strict=True):
            x, t = self.passes.to_device(x), self.passes.to_device(t)
            with self.passes.autocast():
                loss = weight * self.seg_loss(self.seg_pass(x), t)
            self.opt_s.zero_grad(set_to_none=True)
            self.scaler_gs.scale(loss).backward()
            self.scaler_gs.step(self.opt_s)
            self.scaler_gs.update()

    @property
    def d2_matters(self) -> bool:
        """Whether D2 can change anything: under ``argmax`` the mask it judges carries no
        gradient, so D2 and its term D2_S only cost time (skipped unless ``log_unused_terms``)."""
        return self.cfg.seg_to_gen != "argmax" or self.cfg.log_unused_terms

    def _stats_of_generated(self) -> contextlib.AbstractContextManager:
        """While Seg sees generated images, its BatchNorm layers normalise with the batch's
        statistics but leave their running statistics (what validation and inference use) to
        the real images; ``bn_stats_from_generated`` keeps the reference code's mixing."""
        if self.cfg.bn_stats_from_generated:
            return contextlib.nullcontext()
        return running_stats_frozen(self.seg)

    def on_checkpoint(self) -> None:
        self.save_samples(self.run_dir / "samples" / f"step_{self.step:06d}.png")

    def after_step(self) -> None:
        every = self.cfg.sample_every
        if every and self.step % every == 0 and self.step % self.cfg.val_every:
            self.save_samples(self.run_dir / "samples" / f"step_{self.step:06d}.png")

    @torch.no_grad()
    def save_samples(self, path) -> None:
        """Grid of mask | generated image | real image | segmentation, on fixed crops and seeds
        (the generator as ``cganseg generate`` runs it)."""
        samples = (self.data.val or self.data.train)[:N_SAMPLE_ROWS]
        crop = tuple(self.cfg.crop)
        rows, names = [], []
        seg = self.as_segmenter(self.segmenter)
        gen = Generator(self.generator, self.device)
        for i, s in enumerate(samples):
            image, labels = pad_to_at_least(s.image, s.labels, crop)
            y0 = (labels.shape[0] - crop[0]) // 2
            x0 = (labels.shape[1] - crop[1]) // 2
            image = image[:, y0 : y0 + crop[0], x0 : x0 + crop[1]]
            labels = labels[y0 : y0 + crop[0], x0 : x0 + crop[1]]
            fake = gen.generate(labels, seed=self.cfg.seed + i, tile_size=max(crop))
            pred = seg.segment(image, tile_size=self.cfg.tile_size)
            rows.append([*generation_row(labels, [fake], image), overlay_labels(image, pred)])
            names.append(s.name)
        save_grid(path, rows, ["mask", "generated", "real", "segmentation"], names)

    def finish(self) -> dict[str, Any]:
        if self.rank.main:
            self.save_samples(self.run_dir / "samples" / "final.png")
        return super().finish()


def train_cpu_s(cfg: CGanTrainConfig) -> float:
    """CPU-seconds a whole ``train`` run of ``cfg`` should cost on a CPU like the README's: its
    conventional pre-training, then its cGAN-Seg steps (:func:`estimate_cpu_s`)."""
    return (estimate_cpu_s("train-seg", pretrain_config(cfg), cfg.seg_pretrain)
            + estimate_cpu_s("train", cfg, cfg.iterations))  # fmt: skip


def train_cgan(
    cfg: CGanTrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) cGAN-Seg training, after its segmenter's conventional pre-training when
    ``seg_pretrain`` asks for one (:mod:`cganseg.training.pretrain`); returns a summary dict."""
    run = Path(cfg.out)
    started = (run / "last.pt").is_file()  # the joint game has begun: its checkpoint rules
    pretraining = (run / SEG_PRETRAIN_DIR).is_dir() if resume else cfg.seg_pretrain > 0
    if not resume:  # every weight checked before any step, pre-training included
        kind, note = available_perceptual(cfg.perceptual, cfg.perceptual_weights,
                                          chosen="perceptual" in (given or {}))  # fmt: skip
        if note:
            cfg = dataclasses.replace(cfg, perceptual=kind)
            tqdm.write(note)
    if cfg.val_fid:
        find_fid_weights()  # say now, not at the first validation, that the network is missing
    if pretraining and not started:
        if progress and not resume:
            tqdm.write(f"train: {cfg.seg_pretrain} steps of conventional pre-training "
                       f"(train-seg's recipe, in {run / SEG_PRETRAIN_DIR}), then "
                       f"{cfg.iterations} cGAN-Seg steps: "
                       f"{cpu_minutes(train_cpu_s(cfg))} estimated on a CPU")  # fmt: skip
        cfg = pretrain_segmenter(cfg, resume=resume, progress=progress, given=given or {})
        resume = False
    return run_training(CGanTrainer, cfg, resume=resume, progress=progress, given=given)
