"""Issue 17's recipe levers for cGAN-Seg: a warm-up and ramp of the cycle and adversarial
weights, extra Id_S updates, a moving average of Seg, a segmenter to start from, per-network Adam
betas and a cheaper perceptual loss."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers import in_memory_cgan_trainer, make_dataset, tiny_cgan_config, tiny_seg_config

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.errors import InputError
from cganseg.losses.cgan_objective import LossWeights
from cganseg.options import SEG_PRETRAIN_DIR, CGanTrainConfig, SegTrainConfig
from cganseg.runtime.distributed import mean_terms
from cganseg.training.cgan_trainer import CGanTrainer, train_cgan
from cganseg.training.pretrain import resumable
from cganseg.training.run_state import payload
from cganseg.training.schedule import cycle_factor
from cganseg.training.seg_trainer import SegTrainer, train_segmenter

CYCLE_TERMS = {"rec_s", "rec_g", "d1_g"}  # (D2_S is skipped under argmax anyway)


def _trainer(tmp_path, **kw) -> CGanTrainer:
    return in_memory_cgan_trainer(tmp_path, 6, **kw)


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_cycle_factor_warms_up_then_ramps():
    assert [cycle_factor(s, 3, 4) for s in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert [cycle_factor(s, 2, 0) for s in range(4)] == [0, 0, 1, 1]
    assert cycle_factor(0, 0, 0) == 1


def test_ramped_weights_scale_the_cycle_and_adversarial_terms_only():
    w = LossWeights().ramped(0.5)
    assert (w.rec_g, w.rec_s, w.adv_g, w.adv_s) == (50, 50, 0.5, 0.5)
    assert (w.id_g, w.id_s, w.disc) == (50, 50, 0.5)


def test_warm_up_trains_on_the_paired_terms_alone_then_the_cycle_starts(tmp_path):
    """During the warm-up a step equals one with the four weights at 0, and computes nothing
    it does not need; after it the cycle terms are back."""
    warm = _trainer(tmp_path / "a", warmup_gen=2)
    zero = _trainer(tmp_path / "b", w_rec_s=0.0, w_rec_g=0.0, w_adv_g=0.0, w_adv_s=0.0)
    batches = iter(warm.loader())
    for _ in range(2):
        images, targets = next(batches)
        terms = warm.train_step(images, targets)
        zero.train_step(images, targets)
        warm.step += 1
        assert CYCLE_TERMS.isdisjoint(terms) and {"id_g", "id_s"} <= set(terms)
    for name in ("seg", "gen", "d1"):
        _assert_same(_weights(getattr(warm, name)), _weights(getattr(zero, name)))
    assert CYCLE_TERMS <= set(warm.train_step(*next(batches)))


def test_extra_updates_train_the_segmenter_on_further_real_batches(tmp_path):
    """The loader gives (1 + N) batches per step; Gen and D1 see the first one only, so they
    learn exactly as without the extra updates, while Seg takes N more steps."""
    extra = _trainer(tmp_path / "a", seg_extra_updates=1)
    plain = _trainer(tmp_path / "b")
    images, targets = next(iter(extra.loader()))
    assert images.shape[0] == 4 and extra.batches_per_step() == 2
    extra.train_step(images, targets)
    plain.train_step(images[:2], targets[:2])
    for name in ("gen", "d1"):
        _assert_same(_weights(getattr(extra, name)), _weights(getattr(plain, name)))
    a, b = _weights(extra.seg), _weights(plain.seg)
    assert any(not torch.equal(a[k], b[k]) for k in a if "running" not in k)
    adam_steps = [int(next(iter(t.opt_s.state.values()))["step"]) for t in (plain, extra)]
    assert adam_steps == [1, 2]  # without extra updates, exactly one segmenter step


def test_moving_average_of_the_segmenter_with_warm_up(tmp_path):
    trainer = _trainer(tmp_path, seg_ema=0.5)
    batches = iter(trainer.loader())
    trainer.train_step(*next(batches))
    first = _weights(trainer.seg)
    _assert_same(_weights(trainer.segmenter), first)  # the first update copies
    trainer.train_step(*next(batches))
    now, avg = _weights(trainer.seg), _weights(trainer.segmenter)
    d = min(0.5, 2 / 11)  # after one earlier update
    for key in now:
        if "running" in key or "num_batches" in key:  # BatchNorm's from the trained network
            torch.testing.assert_close(avg[key], now[key], msg=key)
        else:
            torch.testing.assert_close(avg[key], d * first[key] + (1 - d) * now[key], msg=key)
    assert "seg_ema_state" in trainer.state_objects()
    best = payload(trainer, full=False)  # what best.pt holds: the average
    _assert_same(best["model_state"], {k: v.cpu() for k, v in avg.items()})


def test_moving_average_of_the_generator_is_what_samples_and_checkpoints_hold(tmp_path):
    trainer = _trainer(tmp_path, gen_ema=0.5)
    batches = iter(trainer.loader())
    trainer.train_step(*next(batches))
    first = _weights(trainer.gen)
    _assert_same(_weights(trainer.generator), first)  # the first update copies
    trainer.train_step(*next(batches))
    now, avg = _weights(trainer.gen), _weights(trainer.generator)
    d = min(0.5, 2 / 11)
    for key in now:
        torch.testing.assert_close(avg[key], d * first[key] + (1 - d) * now[key], msg=key)
    assert any(not torch.equal(avg[k], now[k]) for k in now)
    best = payload(trainer, full=False)  # best.pt's generator: the average
    _assert_same(best["generator_state"], {k: v.cpu() for k, v in avg.items()})
    last = payload(trainer, full=True)  # last.pt: the average for `generate`, Gen to resume
    _assert_same(last["generator_state"], {k: v.cpu() for k, v in avg.items()})
    _assert_same(last["generator_trained_state"], {k: v.cpu() for k, v in now.items()})
    plain = _trainer(tmp_path / "plain")
    assert plain.generator is plain.gen and "gen_ema_state" not in plain.state_objects()


def test_per_network_betas(tmp_path):
    trainer = _trainer(tmp_path, betas=[0.5, 0.999], betas_seg=[0.9, 0.99])
    assert trainer.opt_s.param_groups[0]["betas"] == (0.9, 0.99)
    assert trainer.opt_g.param_groups[0]["betas"] == (0.5, 0.999)
    assert trainer.opt_d.param_groups[0]["betas"] == (0.5, 0.999)
    with pytest.raises(InputError, match="betas_disc"):
        CGanTrainConfig.from_dict({"data": "d", "out": "o", "betas_disc": [0.5, 1.5]})


def test_init_seg_starts_from_a_train_seg_run_of_the_same_architecture(tmp_path):
    data = make_dataset(tmp_path / "data", n=6, size=(40, 40))
    run = tmp_path / "seg"
    train_segmenter(tiny_seg_config(data, run, iterations=2, val_every=2, test_fraction=0.0,
                                    instances="watershed"), progress=False)  # fmt: skip
    stored = load_checkpoint(run / "best.pt")["model_state"]
    cfg = tiny_cgan_config(data, tmp_path / "cgan", init_seg=str(run), instances="watershed")
    trainer = CGanTrainer.from_config(cfg)
    _assert_same({k: v.cpu() for k, v in _weights(trainer.seg).items()}, stored)
    other = tiny_cgan_config(data, tmp_path / "c2", init_seg=str(run), width=8,
                             instances="watershed")  # fmt: skip
    with pytest.raises(InputError, match=r"built otherwise.*width 4 vs 8"):
        CGanTrainer.from_config(other)
    for kw in ({"n_classes": 2}, {}):  # components with 2 classes; flows, the default
        with pytest.raises(InputError, match="built otherwise|instances"):
            CGanTrainer.from_config(tiny_cgan_config(data, tmp_path / "c3", init_seg=str(run),
                                                     **kw))  # fmt: skip


def test_init_seg_on_the_command_line_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", n=6, size=(40, 40))
    train_segmenter(tiny_seg_config(data, tmp_path / "seg", iterations=2, val_every=2,
                                    test_fraction=0.0, instances="watershed"),
                    progress=False)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data", "data", "--out", "cgan", "--init-seg", "seg",
                 "--preset", "cpu", "--crop", "32", "--width", "4", "--gen-width", "4",
                 "--disc-width", "4", "--iterations", "2", "--val-every", "2", "--workers", "0",
                 "--perceptual", "none", "--device", "cpu", "--warmup-gen", "1",
                 "--ramp-steps", "1", "--seg-ema", "0.9", "--seg-extra-updates", "1",
                 "--betas-seg", "0.9,0.99", "--batch-size", "2",
                 "--instances", "watershed"])  # fmt: skip
    assert code == 0
    config = (tmp_path / "cgan" / "config.yaml").read_text()
    assert f"init_seg: {tmp_path / 'seg'}" in config
    assert "seg_ema: 0.9" in config and "betas_seg:\n- 0.9\n- 0.99" in config


def test_mean_terms_divide_by_the_steps_that_computed_each_term():
    means = mean_terms({"a": torch.tensor(6.0), "b": torch.tensor(2.0)}, {"a": 3, "b": 1})
    assert means == {"a": 2.0, "b": 2.0}


def _pretrained_run(data, out, **kw) -> CGanTrainConfig:
    return tiny_cgan_config(data, out, seg_pretrain=3, instances="watershed", iterations=2,
                            val_every=2, test_fraction=0.25, **kw)  # fmt: skip


def test_seg_pretrain_trains_conventionally_then_starts_the_joint_game_from_it(tmp_path):
    data = make_dataset(tmp_path / "data", n=8, size=(40, 40))
    run = tmp_path / "run"
    summary = train_cgan(_pretrained_run(data, run), progress=False)
    pre = run / SEG_PRETRAIN_DIR
    assert summary["step"] == 2 and (pre / "best.pt").is_file()
    assert json.loads((pre / "done.json").read_text())["step"] == 3
    pre_cfg = SegTrainConfig.load(pre / "config.yaml")
    # train-seg's own recipe, on this run's segmenter, crops, batch and seed
    assert (pre_cfg.lr, pre_cfg.iterations, pre_cfg.width, pre_cfg.crop, pre_cfg.seed) == (
        SegTrainConfig.lr, 3, 4, [32, 32], 5)
    assert (run / "split.json").read_text() == (pre / "split.json").read_text()
    assert "seg_pretrain: 3" in (run / "config.yaml").read_text()
    # the joint game's Seg starts from the pre-trained best.pt
    trainer = CGanTrainer.from_config(_pretrained_run(data, run))
    stored = load_checkpoint(pre / "best.pt")["model_state"]
    _assert_same({k: v.cpu() for k, v in _weights(trainer.seg).items()}, stored)


def test_seg_pretrain_stopped_before_the_joint_game_resumes_with_the_runs_options(
    tmp_path, monkeypatch
):
    """A run stopped after its pre-training resumes from ``--out RUN --resume`` alone (the
    options come from the run's config.yaml, the pre-training is not repeated) and ends with
    the weights of an uninterrupted run."""
    data = make_dataset(tmp_path / "data", n=8, size=(40, 40))
    train_cgan(_pretrained_run(data, tmp_path / "a"), progress=False)
    build = CGanTrainer.build

    def crash(self):
        raise RuntimeError("stopped")

    monkeypatch.setattr(CGanTrainer, "build", crash)
    with pytest.raises(RuntimeError):
        train_cgan(_pretrained_run(data, tmp_path / "b"), progress=False)
    assert not (tmp_path / "b" / "last.pt").exists()
    assert resumable(tmp_path / "b") and not resumable(tmp_path / "c")  # (experiment, demo)
    monkeypatch.setattr(CGanTrainer, "build", build)
    with pytest.raises(InputError, match="already holds a training run"):
        train_cgan(_pretrained_run(data, tmp_path / "b"), progress=False)
    calls = []
    monkeypatch.setattr(SegTrainer, "train_step", lambda *a: calls.append(a))
    bare = CGanTrainConfig(data="", out=str(tmp_path / "b"))  # what `--out b --resume` gives
    assert train_cgan(bare, resume=True, progress=False)["step"] == 2
    assert not calls  # the pre-training was finished: not trained again
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("a", "b"))
    for key in ("model_state", "generator_state"):
        _assert_same(a[key], b[key])


def test_seg_pretrain_and_init_seg_exclude_each_other():
    with pytest.raises(InputError, match="both start the segmenter"):
        CGanTrainConfig.from_dict({"data": "d", "out": "o", "init_seg": "x", "seg_pretrain": 2})


def test_train_checks_the_perceptual_weights_before_the_pre_training(tmp_path, monkeypatch,
                                                                     capsys):  # fmt: skip
    """Issue 33: VGG19 asked for, offline and not cached: one line, exit 2, before any step of
    the conventional pre-training (it used to die on the download after hours of it)."""
    import urllib.error

    monkeypatch.delenv("CGANSEG_VGG19_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    data = make_dataset(tmp_path / "data", n=6, size=(40, 40))
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "cpu",
                 "--iterations", "2", "--seg-pretrain", "3", "--perceptual", "vgg19",
                 "--device", "cpu", "--workers", "0", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "VGG19 ImageNet weights are missing" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / SEG_PRETRAIN_DIR).exists()
