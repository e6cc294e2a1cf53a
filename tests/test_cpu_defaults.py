"""Issue 18, item 1: sizes that suit the hardware by default (``--preset auto``), devices tried
in order CUDA, MPS, CPU, a config.yaml that records what was used, a start-up summary and a
time estimate after the first steps."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from tests.helpers import make_dataset, tiny_seg_config

from cganseg.cli import main
from cganseg.errors import InputError
from cganseg.options import CGanTrainConfig, SegTrainConfig, resolve_preset
from cganseg.runtime import device as device_module
from cganseg.runtime.device import resolve_device
from cganseg.training import pace
from cganseg.training.seg_trainer import SegTrainer


def test_train_seg_on_a_cpu_gets_the_cpu_preset_unless_options_say_otherwise():
    cfg = SegTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu"})
    assert (cfg.preset, cfg.crop, cfg.width, cfg.batch_size) == ("cpu", [128, 128], 16, 4)
    given = SegTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "crop": 64})
    assert given.crop == [64, 64] and given.width == 16  # the command line wins over the preset
    paper = SegTrainConfig.from_dict({"data": "d", "out": "o", "preset": "paper"})
    assert (paper.crop, paper.width) == ([512, 512], None)  # None: the backbone's own width
    plain = SegTrainConfig(data="d", out="o")  # the dataclass itself applies no preset
    assert (plain.preset, plain.crop) == (None, [256, 256])
    cgan = CGanTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu"})
    assert (cgan.preset, cgan.gen_width, cgan.style_dim) == ("cpu", 16, 128)
    with pytest.raises(InputError, match="unknown preset 'gpu'"):
        SegTrainConfig.from_dict({"data": "d", "out": "o", "preset": "gpu"})


def test_auto_means_paper_on_a_cuda_gpu_and_devices_are_tried_cuda_mps_cpu(monkeypatch):
    assert resolve_preset("auto", "cpu") == "cpu" and resolve_preset("paper", "cpu") == "paper"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "mps_available", lambda: True)
    assert resolve_device("auto").type == "mps" and resolve_preset("auto", "auto") == "cpu"
    monkeypatch.setattr(device_module, "mps_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(InputError, match="no Apple GPU"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda" and resolve_preset("auto", "auto") == "paper"


def test_config_yaml_records_the_resolved_preset_device_and_width(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=6, size=(48, 48))
    out = tmp_path / "run"
    code = main(["train-seg", "--data", str(data), "--out", str(out), "--iterations", "2",
                 "--val-every", "2", "--crop", "32", "--workers", "0"])  # fmt: skip
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["preset"], saved["device"], saved["width"]) == ("cpu", "cpu", 16)
    assert saved["batch_size"] == 4 and saved["crop"] == [32, 32]
    err = capsys.readouterr()
    summary = (err.out + err.err).splitlines()
    line = next(s for s in summary if s.startswith("train-seg on cpu"))
    assert "unet width 16" in line and "parameters: segmenter" in line and "preset cpu" in line
    assert "4 train" in line or " train," in line


def test_the_first_steps_give_a_time_estimate(monkeypatch, capsys):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(pace.time, "perf_counter", lambda: next(clock) * 0.5)
    p = pace.Pace(start=0, total=1000)
    for step in range(1, 20):
        p.tick(step)
    out = capsys.readouterr().out
    assert out.count("s per step") == 1
    assert "~0.05 s per step: about 49 s for the remaining 988 steps" in out


def test_describe_names_device_networks_and_data(tmp_path):
    data = make_dataset(tmp_path / "data", n=6, size=(48, 48))
    trainer = SegTrainer.from_config(tiny_seg_config(data, tmp_path / "run"))
    line = trainer.describe()
    assert line.startswith("train-seg on cpu") and "unet width 4 (flows)" in line
    assert "crops 32x32, batch 4" in line
    assert pace.duration(30) == "30 s" and pace.duration(600) == "10 min"
    assert pace.duration(7200) == "2.0 h"


def test_describe_states_the_estimated_cpu_time_of_the_steps_left(tmp_path):
    data = make_dataset(tmp_path / "data", n=6, size=(48, 48))
    cfg = tiny_seg_config(data, tmp_path / "run", iterations=300)
    line = SegTrainer.from_config(cfg).describe()
    cost = pace.estimate_cpu_s("train-seg", cfg, 300)
    assert line.endswith(f"; {pace.cpu_minutes(cost)} estimated for 300 steps")


def test_the_estimate_scales_with_batch_crop_and_steps_and_costs_a_cgan_step_more():
    base = SegTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "batch_size": 8})
    gflop = pace.segmenter_gflop(base)
    bigger = SegTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "batch_size": 16,
                                       "crop": 256})  # fmt: skip
    assert pace.segmenter_gflop(bigger) == pytest.approx(8 * gflop, rel=1e-6)
    wider = SegTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "batch_size": 8,
                                      "width": 32})  # fmt: skip
    assert 3.5 * gflop < pace.segmenter_gflop(wider) < 4.5 * gflop  # convolutions: width squared
    one = pace.estimate_cpu_s("train-seg", base, 100)
    assert pace.estimate_cpu_s("train-seg", base, 300) == pytest.approx(3 * one)
    cgan = CGanTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "batch_size": 8,
                                      "seg_extra_updates": 0})  # fmt: skip
    extra = CGanTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "batch_size": 8,
                                       "seg_extra_updates": 2})  # fmt: skip
    assert pace.estimate_cpu_s("train", extra, 100) == pytest.approx(
        pace.estimate_cpu_s("train", cgan, 100) + 2 * one)
    assert pace.cpu_minutes(10) == "~1 CPU-minute" and pace.cpu_minutes(1260) == "~21 CPU-minutes"


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_the_cpu_rates_are_the_measured_ones():
    """CPU_S_PER_GFLOP against what the records measured on the README's 2-core machine: the
    learning curve's trained runs (train-seg; fewshot.py's network: UNet width 16, flows,
    128 px crops, batch 8), ``make demo``'s two runs and a bare ``cganseg train`` (both
    demo_time.py), each within 30%."""
    runs = json.loads((RESULTS / "fewshot.json").read_text())["runs"]
    measured = statistics.median(r["cpu_s"] / r["steps"] for r in runs if r.get("steps"))
    fewshot = SegTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu", "width": 16,
                                        "batch_size": 8, "crop": 128})  # fmt: skip
    assert measured / pace.estimate_cpu_s("train-seg", fewshot, 1) == pytest.approx(1, abs=0.3)
    for row in json.loads((RESULTS / "demo_time.json").read_text())["runs"]:
        cfg = SimpleNamespace(**row["sizing"])
        ratio = row["cpu_s_per_step"] / pace.estimate_cpu_s(row["trainer"], cfg, 1)
        assert ratio == pytest.approx(1, abs=0.3), (row["name"], ratio)
    bare = json.loads((RESULTS / "bare_train_time.json").read_text())
    estimate = sum(pace.estimate_cpu_s(phase["trainer"], SimpleNamespace(**phase["sizing"]),
                                       phase["steps"]) for phase in bare["phases"])  # fmt: skip
    assert bare["cpu_s"] / estimate == pytest.approx(1, abs=0.3)
