"""``train-seg --extra DIR[:FRACTION]``: real and synthetic pairs mixed in every batch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml
from tests.helpers import make_dataset, tiny_seg_config

from cganseg.cli import main
from cganseg.data.dataset import MixedSampler, extra_count
from cganseg.errors import InputError
from cganseg.options import CGanTrainConfig, SegTrainConfig, split_extra
from cganseg.training.seg_trainer import SegTrainer, train_segmenter


def _batches(sampler: MixedSampler, n: int) -> list[list[tuple[int, int]]]:
    keys = list(itertools.islice(iter(sampler), n * sampler.batch_size))
    return [keys[i : i + sampler.batch_size] for i in range(0, len(keys), sampler.batch_size)]


@pytest.mark.parametrize(
    ("fraction", "per_batch"), [(0.25, [1] * 8), (0.5, [2] * 8), (0.0, [0] * 8)]
)
def test_every_batch_holds_its_share(fraction, per_batch):
    batches = _batches(MixedSampler(5, 9, 4, fraction, seed=2), 8)
    assert [sum(i >= 5 for i, _ in b) for b in batches] == per_batch


def test_uneven_share_is_exact_over_batches_and_resumes():
    assert sum(extra_count(j, 4, 0.1) for j in range(10)) == 4  # 10% of 40 samples
    full = _batches(MixedSampler(5, 9, 4, 0.3, seed=2), 12)
    extra_ids = [i for b in full for i, _ in b if i >= 5]
    assert sorted(set(extra_ids)) == list(range(5, 14))  # the extra stream covers all pairs
    for start in (1, 5, 7):
        assert (
            _batches(MixedSampler(5, 9, 4, 0.3, seed=2, start_batch=start), 12 - start)
            == (full[start:])
        )


def test_split_extra_reads_an_optional_fraction():
    assert split_extra("synth") == ("synth", None)
    assert split_extra("runs/synth:0.7") == ("runs/synth", 0.7)
    assert split_extra("C:/data/synth") == ("C:/data/synth", None)


def _cfg(data, out, **kw) -> SegTrainConfig:
    return tiny_seg_config(
        data, out, **{"iterations": 4, "val_every": 4, "test_fraction": 0.0, **kw}
    )


def test_training_draws_extra_pairs(tmp_path):
    real = make_dataset(tmp_path / "real", n=5, size=(40, 40))
    synth = make_dataset(tmp_path / "synth", n=7, size=(48, 36), seed=9)
    cfg = _cfg(real, tmp_path / "run", extra=str(synth), extra_fraction=0.5)
    trainer = SegTrainer.from_config(cfg)
    assert len(trainer.data.train) == 4 and len(trainer.extra) == 7
    loader_keys = list(itertools.islice(iter(trainer.loader().sampler), 8))
    assert sum(i >= 4 for i, _ in loader_keys) == 4


def test_cli_records_extra_and_refuses_mismatches(tmp_path, capsys):
    real = make_dataset(tmp_path / "real", n=5, size=(40, 40))
    synth = make_dataset(tmp_path / "synth", n=3, size=(40, 40), seed=9)
    out = tmp_path / "run"
    argv = [
        "train-seg",
        "--data",
        str(real),
        "--out",
        str(out),
        "--width",
        "4",
        "--crop",
        "32",
        "--batch-size",
        "2",
        "--iterations",
        "2",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--quiet",
    ]
    assert main([*argv, "--extra", f"{synth}:0.5"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["extra"] == str(synth) and saved["extra_fraction"] == 0.5
    rgb = make_dataset(tmp_path / "rgb", n=2, size=(40, 40), channels=3)
    assert main([*argv[:4], str(tmp_path / "r2"), *argv[5:], "--extra", str(rgb)]) == 2
    assert "channel" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
    assert main([*argv[:4], str(tmp_path / "r3"), *argv[5:], "--extra", f"{synth}:1.5"]) == 2


def test_extra_pairs_change_training_and_cgan_refuses_them(tmp_path):
    real = make_dataset(tmp_path / "real", n=5, size=(40, 40))
    synth = make_dataset(tmp_path / "synth", n=4, size=(40, 40), seed=9)
    train_segmenter(_cfg(real, tmp_path / "a"), progress=False)
    train_segmenter(_cfg(real, tmp_path / "b", extra=str(synth)), progress=False)
    a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()[1]
    b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1]
    assert a != b
    with pytest.raises(InputError, match="train-seg"):
        CGanTrainConfig(data="d", out="o", extra=str(synth)).check()
    with pytest.raises(InputError, match="extra_fraction"):
        SegTrainConfig(data="d", out="o", extra_fraction=0.5).check()
    assert np.isfinite(float(a.split(",")[1]))
