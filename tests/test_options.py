"""One source of options: presets are applied by the config itself (issue 14), so the CLI, the
Python API and config.yaml agree; options a trainer would ignore are refused."""

from __future__ import annotations

import pytest
import yaml
from tests.helpers import make_dataset

from cganseg.cli import main
from cganseg.errors import InputError
from cganseg.options import PRESETS, CGanTrainConfig


def test_the_cpu_preset_gives_the_same_run_from_the_cli_and_the_api(tmp_path):
    data = make_dataset(tmp_path / "D", n=6)
    out = tmp_path / "run"
    rc = main(["train", "--preset", "cpu", "--data", str(data), "--out", str(out),
               "--iterations", "1", "--val-every", "1", "--perceptual", "none",
               "--device", "cpu", "--workers", "0", "--quiet"])  # fmt: skip
    assert rc == 0
    api = CGanTrainConfig.from_dict(
        {"preset": "cpu", "data": str(data), "out": str(out), "iterations": 1, "val_every": 1,
         "perceptual": "none", "device": "cpu", "num_workers": 0}  # fmt: skip
    )
    for key, value in PRESETS["cpu"].items():
        assert getattr(api, key) == value, key
    assert yaml.safe_load((out / "config.yaml").read_text()) == api.to_dict()


def test_a_given_option_beats_the_preset():
    cfg = CGanTrainConfig.from_dict({"preset": "cpu", "data": "d", "out": "o", "crop": 64})
    assert cfg.crop == [64, 64] and cfg.gen_width == PRESETS["cpu"]["gen_width"]


def test_an_unknown_preset_and_an_ignored_weight_decay_are_refused():
    with pytest.raises(InputError, match="unknown preset 'gpu'"):
        CGanTrainConfig.from_dict({"preset": "gpu", "data": "d", "out": "o"})
    with pytest.raises(InputError, match="weight_decay is for train-seg"):
        CGanTrainConfig.from_dict({"data": "d", "out": "o", "weight_decay": 0.01})
