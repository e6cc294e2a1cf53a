"""One training step of either trainer, in memory: no data folder, no run folder.

The trainers take their data split as an argument and write nothing until ``run()``, so a step
can be built and checked on tiny tensors (issue 14). Also the two small state objects that
decide when a run keeps a model, stops early or rolls back.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.helpers import synthetic_pair, tiny_cgan_config, tiny_seg_config

from cganseg.data.dataset import Sample
from cganseg.data.normalize import normalize_percentile
from cganseg.training.cgan_trainer import CGanTrainer
from cganseg.training.run_data import DataSplit
from cganseg.training.seg_trainer import SegTrainer
from cganseg.training.stopping import EarlyStopping, Rollbacks


def _in_memory_split(n: int = 4) -> DataSplit:
    samples = []
    for i in range(n):
        image, labels = synthetic_pair((40, 40), seed=i)
        samples.append(Sample(f"s{i}", normalize_percentile(image[None]), labels.astype(np.int32)))
    names = [s.name for s in samples]
    return DataSplit({"train": names, "val": [], "test": []}, samples, [], [], hashes={})


@pytest.mark.parametrize(
    ("trainer_cls", "make_cfg"), [(SegTrainer, tiny_seg_config), (CGanTrainer, tiny_cgan_config)]
)
def test_one_step_in_memory_changes_the_segmenter_and_writes_nothing(
    tmp_path, trainer_cls, make_cfg
):
    out = tmp_path / "never written"
    cfg = make_cfg(tmp_path / "no data here", out, batch_size=2)
    trainer = trainer_cls(cfg, _in_memory_split(), progress=False)
    before = [p.detach().clone() for p in trainer.segmenter.parameters()]
    images, targets = next(iter(trainer.loader()))
    terms = trainer.train_step(images, targets)
    assert set(terms) <= set(trainer.loss_columns) and "loss" in terms
    assert all(math.isfinite(float(v)) for v in terms.values())
    after = list(trainer.segmenter.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not out.exists()


def test_early_stopping_keeps_the_best_and_stops_after_patience():
    early = EarlyStopping(patience=2)
    assert early.update(0.5) and early.best == 0.5
    assert not early.update(0.4) and not early.should_stop
    assert not early.update(0.5) and early.should_stop  # equal is no improvement
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(early.state_dict())
    assert (restored.best, restored.stale) == (0.5, 2)
    assert EarlyStopping(patience=0).update(None)  # no validation set: keep the latest
    never = EarlyStopping(patience=0)
    never.update(1.0)
    for _ in range(10):
        never.update(0.0)
    assert not never.should_stop


def test_rollbacks_compound_from_the_restored_scale_and_run_out():
    rb = Rollbacks(enabled=True, allowed=2, factor=0.5)
    assert rb.available and rb.take() == pytest.approx(0.5) and rb.lr_scale == pytest.approx(0.5)
    # a rollback to a checkpoint saved before the first one: its scale is 1, the count stays
    rb.load_state_dict({"lr_scale": 1.0, "rollbacks": 0})
    assert rb.count == 1 and rb.take() == pytest.approx(0.25) and rb.lr_scale == 0.25
    assert not rb.available
    assert not Rollbacks(enabled=False, allowed=3, factor=0.5).available
