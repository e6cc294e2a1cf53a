"""cGAN-Seg training on tiny synthetic data: gradients, loss weights, resume, outputs, CLI."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from tests.helpers import metrics_rows
from tests.helpers import tiny_cgan_config as _cfg

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.errors import InputError, TrainingDiverged
from cganseg.inference.generate import load_generator
from cganseg.instances import MODES
from cganseg.losses.adversarial import lsgan_loss
from cganseg.losses.cgan_objective import (
    D_TERMS,
    GS_TERMS,
    LossWeights,
    discriminator_loss,
    generator_segmenter_loss,
)
from cganseg.models.discriminator import PatchDiscriminator
from cganseg.models.registry import build_segmenter
from cganseg.options import CGanTrainConfig
from cganseg.runtime.interrupt import Interrupted
from cganseg.training.cgan_trainer import CGanTrainer, mask_for_generator, train_cgan


@pytest.fixture
def data(tmp_path, dataset_factory):
    return dataset_factory(tmp_path / "data", n=8, size=(37, 53))


@pytest.mark.parametrize(
    ("mode", "reaches"),
    [
        ("soft", True),
        ("straight-through", True),
        ("argmax", False),
    ],
)
def test_d2_gradient_reaches_segmenter_only_in_differentiable_modes(mode, reaches):
    torch.manual_seed(0)
    seg = build_segmenter("unet", 1, 3, 4)
    d2 = PatchDiscriminator(3, 4, 2)
    mask = mask_for_generator(seg(torch.randn(2, 1, 32, 32)), mode, MODES["watershed"])
    if mask.requires_grad:
        lsgan_loss(d2(mask), True).backward()
    grads = [p.grad for p in seg.parameters()]
    got = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert got is reaches


def test_loss_weights_are_applied_as_configured():
    terms = {k: torch.tensor(float(i + 1)) for i, k in enumerate(GS_TERMS)}
    w = LossWeights(adv_g=2, adv_s=3, rec_g=5, rec_s=7, id_g=11, id_s=13, disc=0.25)
    expected = 2 * 1 + 3 * 2 + 5 * 3 + 7 * 4 + 11 * 5 + 13 * 6
    assert generator_segmenter_loss(terms, w).item() == expected
    d_terms = {k: torch.tensor(float(i + 1)) for i, k in enumerate(D_TERMS)}
    assert discriminator_loss(d_terms, w).item() == 0.25 * 10
    paper = LossWeights()
    assert (paper.adv_g, paper.rec_g, paper.id_g, paper.disc) == (1, 100, 50, 0.5)
    cfg = CGanTrainConfig(data="d", out="o", w_rec_g=3.0, w_disc=0.1)
    assert cfg.loss_weights() == LossWeights(rec_g=3.0, disc=0.1)


def test_few_steps_write_samples_checkpoints_and_segment(data, tmp_path):
    out = tmp_path / "run"
    summary = train_cgan(_cfg(data, out, iterations=6, val_every=4, sample_every=3), progress=False)
    assert summary["step"] == 6
    rows = metrics_rows(out)
    # under argmax (the default) D2 cannot change anything and is skipped (issue 15): its
    # columns stay empty; before issue 15 every column was filled
    d2 = {"d2_s", "real_d2", "fake_d2"}
    logged = [k for k in (*GS_TERMS, *D_TERMS, "loss", "loss_d") if k not in d2]
    assert len(rows) == 6 and all(rows[0][k] for k in logged)
    assert not any(rows[0][k] for k in d2)
    samples = sorted(p.name for p in (out / "samples").glob("*.png"))
    # validations at 4 and at the last step (6), --sample-every at 3, plus final.png
    assert samples == ["final.png", "step_000003.png", "step_000004.png", "step_000006.png"]
    best = load_checkpoint(out / "best.pt")
    assert best["kind"] == "train" and "generator_state" in best and "d1_state" not in best
    last = load_checkpoint(out / "last.pt")
    for key in ("d1_state", "d2_state", "opt_g", "opt_s", "opt_d", "scaler_gs", "scaler_d"):
        assert key in last, key
    gen = load_generator(out, "cpu")
    labels = np.zeros((37, 53), np.int32)
    labels[5:15, 5:15], labels[20:30, 30:45] = 1, 2
    a, b = gen.generate(labels, seed=1), gen.generate(labels, seed=2)
    assert a.shape == (1, 37, 53) and np.abs(a).max() <= 1.0
    assert np.array_equal(a, gen.generate(labels, seed=1)) and not np.array_equal(a, b)
    pred = tmp_path / "pred"
    assert main(["segment", str(out), str(data / "images"), str(pred), "--quiet"]) == 0
    assert len(list(pred.glob("*.tif"))) == 8
    assert main(["evaluate", str(data), str(pred), "--out", str(tmp_path / "ev"), "--quiet"]) == 0


LEVERS = {"seg_ema": 0.9, "seg_extra_updates": 1, "warmup_gen": 2, "ramp_steps": 2,
          "gen_ema": 0.9}


@pytest.mark.parametrize("levers", [{}, LEVERS], ids=["paper", "issue-17-levers"])
def test_interrupted_run_resumes_with_the_same_losses(data, tmp_path, monkeypatch, levers):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train_cgan(_cfg(data, straight, pool_size=2, mix_prob=0.5, **levers), progress=False)
    real_step = CGanTrainer.train_step

    def interrupted(self, images, targets):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # during step 3: it finishes, then stops
        return real_step(self, images, targets)

    monkeypatch.setattr(CGanTrainer, "train_step", interrupted)
    with pytest.raises(Interrupted, match="stopped at step 3 .SIGTERM."):
        train_cgan(_cfg(data, halves, pool_size=2, mix_prob=0.5, **levers), progress=False)
    monkeypatch.setattr(CGanTrainer, "train_step", real_step)
    train_cgan(_cfg(data, halves, pool_size=2, mix_prob=0.5, **levers), resume=True,
               progress=False)  # fmt: skip
    a, b = metrics_rows(straight), metrics_rows(halves)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["loss_d"] for r in a] == [r["loss_d"] for r in b]
    sa = load_checkpoint(straight / "last.pt")
    sb = load_checkpoint(halves / "last.pt")
    keys = ["model_state", "generator_state", "d1_state", "d2_state"]
    for key in keys + (["seg_ema_state", "generator_trained_state"] if levers else []):
        assert all(torch.equal(sa[key][k], sb[key][k]) for k in sa[key]), key
    assert [r.get("rec_s") for r in a] == [r.get("rec_s") for r in b]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_step = CGanTrainer.train_step

    def diverging(self, images, targets):
        terms = real_step(self, images, targets)
        if self.step >= 2:  # the 3rd step (0-based 2) goes wrong
            terms["loss"] = torch.tensor(float("nan"))
        return terms

    monkeypatch.setattr(CGanTrainer, "train_step", diverging)
    with pytest.raises(TrainingDiverged, match="loss became nan by step 3"):
        train_cgan(_cfg(data, out), progress=False)
    assert load_checkpoint(out / "last.pt")["step"] == 2


def test_crop_not_divisible_by_16_is_refused(data, tmp_path):
    with pytest.raises(InputError, match="divisible by 16"):
        train_cgan(_cfg(data, tmp_path / "run", crop=[40, 40]), progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_train_with_preset_and_overrides(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--preset",
            "cpu",
            "--crop",
            "32",
            "--width",
            "4",
            "--gen-width",
            "4",
            "--style-dim",
            "8",
            "--disc-width",
            "4",
            "--disc-layers",
            "2",
            "--batch-size",
            "2",
            "--iterations",
            "2",
            "--val-every",
            "2",
            "--perceptual",
            "none",
            "--seg-to-gen",
            "argmax",
            "--betas",
            "0.9,0.999",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = CGanTrainConfig.load(out / "config.yaml")
    assert cfg.preset == "cpu" and cfg.seg_to_gen == "argmax" and cfg.betas == [0.9, 0.999]
    assert cfg.crop == [32, 32] and cfg.n_mapping == 4  # preset value kept where not overridden
    assert np.isfinite(float(metrics_rows(out)[-1]["loss"]))


def test_resume_refuses_an_earlier_versions_gpu_random_state(data, tmp_path, capsys):
    from cganseg.checkpoint import save_checkpoint

    out = tmp_path / "run"
    cfg = _cfg(data, out, iterations=2)
    train_cgan(cfg, progress=False)
    state = load_checkpoint(out / "last.pt")
    state["aug_rng"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA generator's state
    save_checkpoint(out / "last.pt", state)
    rc = main(["train", "--out", str(out), "--resume", "--iterations", "3", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "GPU DiffAugment random state" in err and "\n" not in err
