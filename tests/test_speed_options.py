"""Speed options (fused Adam, channels-last, torch.compile) leave training results unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import tiny_cgan_config, tiny_seg_config

from cganseg.cli import build_parser
from cganseg.training.cgan_trainer import CGanTrainer
from cganseg.training.seg_trainer import SegTrainer


def _losses(trainer_cls, cfg, steps: int = 3) -> np.ndarray:
    trainer = trainer_cls.from_config(cfg)
    batches = iter(trainer.train_loader)
    return np.array([trainer.train_step(*next(batches))["loss"].item() for _ in range(steps)])


@pytest.mark.parametrize(
    "options", [{"fused_adam": False}, {"channels_last": True}], ids=["unfused", "channels-last"]
)
@pytest.mark.parametrize(
    ("trainer_cls", "make_cfg"),
    [(SegTrainer, tiny_seg_config), (CGanTrainer, tiny_cgan_config)],
    ids=["train-seg", "train"],
)
def test_speed_options_give_the_same_losses(tmp_path, tiny_dataset, trainer_cls, make_cfg, options):
    expected = _losses(trainer_cls, make_cfg(tiny_dataset, tmp_path / "a"))
    got = _losses(trainer_cls, make_cfg(tiny_dataset, tmp_path / "b", **options))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert expected[0] != expected[-1]  # the steps did train


def test_channels_last_reaches_the_networks(tmp_path, tiny_dataset):
    trainer = SegTrainer.from_config(tiny_seg_config(tiny_dataset, tmp_path, channels_last=True))
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(g["fused"] for g in trainer.optimizer.param_groups)


def test_cli_speed_flags_reach_the_config():
    args = build_parser().parse_args(
        ["train-seg", "--channels-last", "--compile", "--no-fused-adam"]
    )
    assert (args.channels_last, args.compile, args.fused_adam) == (True, True, False)
    args = build_parser().parse_args(["train-seg"])
    assert (args.channels_last, args.compile, args.fused_adam) == (None, None, None)


@pytest.mark.slow
def test_compiled_training_gives_the_same_losses(tmp_path, tiny_dataset):
    """torch.compile (inductor; on CPU it builds C++ kernels, about a minute here)."""
    expected = _losses(SegTrainer, tiny_seg_config(tiny_dataset, tmp_path / "a"))
    compiled = tiny_seg_config(tiny_dataset, tmp_path / "b", compile=True)
    np.testing.assert_allclose(_losses(SegTrainer, compiled), expected, rtol=1e-4)


def test_amp_dtype_option(tmp_path, tiny_dataset):
    from cganseg.errors import InputError

    with pytest.raises(InputError, match="amp_dtype must be one of fp16, bf16"):
        tiny_seg_config(tiny_dataset, tmp_path, amp_dtype="fp8").check()
    trainer = SegTrainer.from_config(tiny_seg_config(tiny_dataset, tmp_path, amp_dtype="bf16"))
    assert trainer.passes.amp_dtype is torch.bfloat16
    assert not trainer.passes.amp and not trainer.scaler.is_enabled()  # CPU: full precision
