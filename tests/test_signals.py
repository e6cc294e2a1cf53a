"""Real signals on real ``cganseg`` processes: stop at a safe point, save, resume, survive kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import (
    make_dataset,
    tiny_cgan_config,
    tiny_experiment,
    tiny_seg_config,
    write_image,
)

from cganseg.checkpoint import load_checkpoint
from cganseg.data.io import read_image, read_labels
from cganseg.training.cgan_trainer import train_cgan
from cganseg.training.seg_trainer import train_segmenter

pytestmark = pytest.mark.slow


def _start(*args: str, launcher: tuple[str, ...] = ("-m", "cganseg")) -> subprocess.Popen:
    """``python -m cganseg ARGS`` in a session of its own (so its whole group can be signalled)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.Popen(
        [sys.executable, *launcher, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.05)


def _csv_rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name]


@pytest.mark.parametrize(
    ("command", "sig"), [("train-seg", signal.SIGTERM), ("train", signal.SIGINT)]
)
def test_signal_saves_last_pt_and_resume_says_from_where(tmp_path, command, sig):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    make = tiny_seg_config if command == "train-seg" else tiny_cgan_config
    make(data, out, iterations=100000, val_every=1000).save(tmp_path / "cfg.yaml")
    proc = _start(command, "--config", str(tmp_path / "cfg.yaml"), "--quiet")
    _wait_for(lambda: _csv_rows(out / "metrics.csv") >= 3, proc)  # a few steps done, none saved
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: stopped at step ") and "last.pt saved" in line, err
    assert "Traceback" not in err
    step = int(line.split("stopped at step ")[1].split()[0])
    assert load_checkpoint(out / "last.pt")["step"] == step >= 3
    assert _no_temp_files(out)
    resumed = _start(command, "--out", str(out), "--resume", "--iterations", str(step + 1))
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"from step {step}" in stdout
    assert load_checkpoint(out / "last.pt")["step"] == step + 1


def test_sigkill_leaves_the_previous_checkpoint_and_resume_goes_on(tmp_path):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    tiny_seg_config(data, out, iterations=100000, val_every=1).save(tmp_path / "cfg.yaml")
    proc = _start("train-seg", "--config", str(tmp_path / "cfg.yaml"), "--quiet")
    _wait_for(lambda: _csv_rows(out / "metrics.csv") >= 5, proc)  # checkpoints at every step
    proc.kill()  # SIGKILL: no handler runs, possibly in the middle of writing last.pt
    proc.wait(timeout=60)
    step = load_checkpoint(out / "last.pt")["step"]  # a whole checkpoint, not half of one
    assert step >= 4
    resumed = _start("train-seg", "--out", str(out), "--resume", "--iterations", str(step + 2))
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"from step {step}" in stdout


def test_sigterm_during_segment_keeps_whole_label_files(tmp_path):
    data = make_dataset(tmp_path / "data", n=6)
    run = tmp_path / "run"
    train_segmenter(tiny_seg_config(data, run, iterations=2), progress=False)
    images = tmp_path / "big"
    rng = np.random.default_rng(0)
    for i in range(40):
        write_image(images / f"img_{i:02d}.png", rng.integers(0, 255, (768, 768), dtype=np.uint8))
    out = tmp_path / "labels"
    proc = _start("segment", str(run), str(images), str(out), "--quiet", "--device", "cpu")
    _wait_for(lambda: len(list(out.glob("*.tif"))) >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted: stopped after" in err and "Traceback" not in err
    written = sorted(out.glob("*.tif"))
    assert 1 <= len(written) < 40
    for path in written:
        assert read_labels(path).shape == (768, 768)
    assert _no_temp_files(out)


def test_sigterm_during_generate_then_the_same_command_finishes(tmp_path):
    data = make_dataset(tmp_path / "data", n=6)
    run = tmp_path / "run"
    train_cgan(tiny_cgan_config(data, run, iterations=2), progress=False)
    out = tmp_path / "pairs"
    args = ("generate", str(run), str(data / "masks"), str(out), "--per-mask", "40", "--quiet")
    proc = _start(*args, "--device", "cpu")
    _wait_for(lambda: len(list((out / "images").glob("*.tif"))) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "the same command finishes the rest" in err and "Traceback" not in err
    first = {p.name: read_image(p) for p in (out / "images").glob("*.tif")}
    assert 2 <= len(first) < 240 and _no_temp_files(out)
    again = _start(*args, "--device", "cpu")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert len(list((out / "images").glob("*.tif"))) == 240
    for name, image in first.items():  # finished pairs were kept, not redone differently
        np.testing.assert_array_equal(read_image(out / "images" / name), image)


def test_sigterm_during_experiment_then_the_same_command_finishes(tmp_path):
    import yaml

    options = tiny_experiment(tmp_path, scenarios=["B"]).to_dict()
    options["seg"] = {**options.get("seg", {}), "iterations": 400, "val_every": 400}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(options))
    out = Path(options["out"])
    proc = _start("experiment", str(path), "--quiet")
    _wait_for(lambda: _csv_rows(out / "fold_1" / "B_unet" / "metrics.csv") >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted: stopped at step" in err and "Traceback" not in err
    step = load_checkpoint(out / "fold_1" / "B_unet" / "last.pt")["step"]
    again = _start("experiment", str(path), "--quiet")
    stdout, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"from step {step}" in stdout and "experiment report" in stdout


def test_sigterm_to_the_whole_group_with_loader_workers(tmp_path):
    """As SLURM or a terminal's Ctrl-C do: every process of the job gets the signal, workers too."""
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cfg = tiny_seg_config(data, out, iterations=100000, val_every=1000, num_workers=2)
    cfg.save(tmp_path / "cfg.yaml")
    proc = _start("train-seg", "--config", str(tmp_path / "cfg.yaml"), "--quiet")
    _wait_for(lambda: _csv_rows(out / "metrics.csv") >= 3, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    step = int(err.split("stopped at step ")[1].split()[0])
    assert load_checkpoint(out / "last.pt")["step"] == step


def test_sigterm_to_torchrun_saves_the_step_all_processes_reached(tmp_path):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    tiny_seg_config(data, out, iterations=100000, val_every=1000, log_every=2).save(
        tmp_path / "cfg.yaml"
    )
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    args = ("-m", "cganseg", "train-seg", "--config", str(tmp_path / "cfg.yaml"), "--quiet")
    proc = _start(*args, launcher=launcher)
    _wait_for(lambda: _csv_rows(out / "metrics.csv") >= 2, proc)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted: stopped at step")]
    assert len(lines) == 1, err  # rank 0 speaks for both
    step = int(lines[0].split("stopped at step ")[1].split()[0])
    assert step % 2 == 0  # processes agree at logging steps
    assert load_checkpoint(out / "last.pt")["step"] == step
