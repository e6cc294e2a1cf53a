"""Issue 15, part 1 fixes: the segmenter's BatchNorm statistics come from real images only; work
that cannot change the result is skipped; the generator draws no frame."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.helpers import in_memory_cgan_trainer

from cganseg.models.generator import StyleUNet
from cganseg.training.cgan_trainer import CGanTrainer


def _trainer(tmp_path, **kw) -> CGanTrainer:
    return in_memory_cgan_trainer(tmp_path, 4, **kw)


def _bn_buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


def test_bn_running_statistics_come_from_the_real_images_only(tmp_path):
    trainer = _trainer(tmp_path)
    images, targets = next(iter(trainer.loader()))
    alone = copy.deepcopy(trainer.seg).train()
    with torch.no_grad():
        alone(images)  # the real-image pass by itself
    trainer.train_step(images, targets)
    expected, got = _bn_buffers(alone), _bn_buffers(trainer.seg)
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)


def test_the_reference_behaviour_stays_available(tmp_path):
    trainer = _trainer(tmp_path, bn_stats_from_generated=True)
    images, targets = next(iter(trainer.loader()))
    alone = copy.deepcopy(trainer.seg).train()
    with torch.no_grad():
        alone(images)
    trainer.train_step(images, targets)
    key = next(k for k in _bn_buffers(alone) if k.endswith("running_mean"))
    assert not torch.allclose(_bn_buffers(trainer.seg)[key], _bn_buffers(alone)[key])


@pytest.mark.parametrize("skip", ["argmax", "rec_s"])
def test_skipped_work_changes_no_weight_and_no_other_term(tmp_path, skip):
    """Under argmax, D2 sends no gradient anywhere; with w_rec_s 0 the Seg(Gen(mask)) pass is
    weightless. The same draws without the skipped work give the same weights and terms."""
    kw = {"w_rec_s": 0.0} if skip == "rec_s" else {}
    full = _trainer(tmp_path / "a", log_unused_terms=True, **kw)
    lean = _trainer(tmp_path / "b", **kw)
    for step, (images, targets) in enumerate(full.loader()):
        if step == 2:
            break
        t_full = full.train_step(images, targets)
        t_lean = lean.train_step(images, targets)
    for name in ("seg", "gen", "d1"):
        a, b = getattr(full, name).state_dict(), getattr(lean, name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=f"{name}.{key}")
    skipped = {"d2_s", "real_d2", "fake_d2"} if skip == "argmax" else {"rec_s"}
    assert skipped.isdisjoint(t_lean)
    for key in set(t_lean) - {"loss", "loss_d"}:
        torch.testing.assert_close(t_lean[key], t_full[key], msg=key)


def test_the_generator_draws_no_frame():
    """On a uniform mask, the border band of a generated image looks like its interior."""
    torch.manual_seed(0)
    gen = StyleUNet(3, 1, width=8, style_dim=16, n_mapping=2).eval()
    mask = torch.zeros(8, 3, 64, 64)
    mask[:, 0] = 1  # all background
    with torch.no_grad():
        out = gen(mask, generator=torch.Generator().manual_seed(1))
    inner = out[..., 8:-8, 8:-8].mean(dim=(2, 3))
    for band in (out[..., :3, :], out[..., -3:, :], out[..., :, :3], out[..., :, -3:]):
        gap = (band.mean(dim=(2, 3)) - inner).abs().mean()
        assert gap < 0.25 * out.std(), (float(gap), float(out.std()))
