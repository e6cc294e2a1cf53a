"""Data-parallel training (torchrun, gloo on CPU) equals one process at the same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import tiny_cgan_config, tiny_seg_config

from cganseg.checkpoint import load_checkpoint
from cganseg.data.dataset import SeededSampler, ShardSampler
from cganseg.errors import InputError
from cganseg.training.cgan_trainer import train_cgan
from cganseg.training.seg_trainer import train_segmenter


def _losses(run_dir: Path, columns: tuple[str, ...]) -> np.ndarray:
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r[columns[0]]]
    return np.array([[float(r[c]) for c in columns] for r in rows])


def _torchrun(nproc: int, *cganseg_args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m cganseg ARGS... --quiet``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    args += ["--nproc-per-node", str(nproc), "-m", "cganseg", *cganseg_args, "--quiet"]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def test_shard_sampler_splits_each_global_batch_between_processes():
    stream = SeededSampler(10, seed=4)
    whole = list(islice(iter(stream), 24))
    shards = [list(islice(iter(ShardSampler(stream, 6, r, 3)), 16)) for r in range(3)]
    rebuilt = [key for b in range(4) for r in range(3) for key in shards[r][2 * b : 2 * b + 2]]
    assert rebuilt[:24] == whole
    with pytest.raises(InputError, match="multiple of the 4 processes"):
        ShardSampler(stream, 6, 0, 4)


@pytest.mark.slow
def test_two_process_train_seg_matches_one_process(tmp_path, tiny_dataset):
    columns = ("loss",)
    single = tmp_path / "single"
    train_segmenter(tiny_seg_config(tiny_dataset, single), progress=False)
    config = tmp_path / "ddp.yaml"
    tiny_seg_config(tiny_dataset, tmp_path / "ddp").save(config)
    result = _torchrun(2, "train-seg", "--config", str(config))
    _ok(result)
    assert result.stdout.count("done:") == 1  # rank 0 alone reports
    expected, got = _losses(single, columns), _losses(tmp_path / "ddp", columns)
    assert got.shape == expected.shape == (6, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    a = load_checkpoint(single / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")["model_state"]
    assert a.keys() == b.keys()  # BatchNorm keys unchanged by the global-statistics layers
    cfg = tiny_seg_config(tiny_dataset, single)
    for key in a:  # gradients averaged in another order: float rounding, which Adam can make a
        # whole step for a weight whose gradient is ~0 (seen: 7.1e-4 in 2 weights of 36864 after
        # 6 steps); another data stream would differ everywhere
        ours, theirs = b[key].float(), a[key].float()
        close = torch.isclose(ours, theirs, rtol=1e-3, atol=5e-4)
        assert close.float().mean() >= 0.999, key
        assert (ours - theirs).abs().max() <= 2 * cfg.lr * cfg.iterations, key


@pytest.mark.slow
def test_two_process_cgan_matches_one_process_and_resumes_alone(tmp_path, tiny_dataset):
    columns = ("loss", "loss_d", "rec_s", "id_g", "d1_g")
    options = dict(schedule="constant", iterations=4, val_every=2)
    single = tmp_path / "single"
    train_cgan(tiny_cgan_config(tiny_dataset, single, **options), progress=False)
    config = tmp_path / "ddp.yaml"
    tiny_cgan_config(tiny_dataset, tmp_path / "ddp", **{**options, "iterations": 2}).save(config)
    _ok(_torchrun(2, "train", "--config", str(config)))
    assert _losses(tmp_path / "ddp", columns).shape == (2, len(columns))
    # the 2-process checkpoint goes on in one process, to the single run's end
    resumed = tiny_cgan_config(tiny_dataset, tmp_path / "ddp", **options)
    train_cgan(resumed, resume=True, progress=False, given={"iterations": 4})
    expected, got = _losses(single, columns), _losses(tmp_path / "ddp", columns)
    assert got.shape == expected.shape == (4, len(columns))
    # two processes average gradients in another order: float rounding (~1e-7) that the GAN's
    # steps amplify to ~2e-4 by step 4; another data stream or state would differ by percents
    np.testing.assert_allclose(got, expected, rtol=5e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_refuses_a_batch_that_does_not_shard(tmp_path, tiny_dataset):
    config = tmp_path / "ddp.yaml"
    tiny_seg_config(tiny_dataset, tmp_path / "ddp", batch_size=3).save(config)
    result = _torchrun(2, "train-seg", "--config", str(config))
    assert result.returncode != 0
    assert "must be a multiple of the 2 processes" in result.stderr
    assert not (tmp_path / "ddp").exists()


@pytest.mark.slow
def test_torchrun_segment_splits_a_folder_between_processes(tmp_path, tiny_dataset):
    from cganseg.cli import main
    from cganseg.data.io import read_labels

    run = tmp_path / "run"
    train_segmenter(tiny_seg_config(tiny_dataset, run, iterations=3), progress=False)
    images = tiny_dataset / "images"
    assert main(["segment", str(run), str(images), str(tmp_path / "one"), "--quiet"]) == 0
    result = _torchrun(2, "segment", str(run), str(images), str(tmp_path / "two"))
    _ok(result)
    assert result.stdout.count("wrote the labels of 6 image(s)") == 1
    one = sorted(p.name for p in (tmp_path / "one").glob("*.tif"))
    assert one == sorted(p.name for p in (tmp_path / "two").glob("*.tif")) and len(one) == 6
    for name in one:
        np.testing.assert_array_equal(
            read_labels(tmp_path / "two" / name), read_labels(tmp_path / "one" / name)
        )


def test_single_process_commands_refuse_torchrun(monkeypatch, tmp_path, capsys):
    from cganseg.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["synth-masks", str(tmp_path), str(tmp_path / "out"), "--n", "1"]) == 2
    assert "start it without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
