"""One source of options: presets are applied by the config itself (issue 14), so the CLI, the
Python API and config.yaml agree; options a trainer would ignore are refused."""

from __future__ import annotations

import pytest
import yaml
from tests.helpers import make_dataset

from cganseg.cli import main
from cganseg.errors import InputError
from cganseg.options import CGanTrainConfig, SegTrainConfig, StepShare
from cganseg.optionspec import preset_values

#: the sizes --preset cpu gives (the recipe's shares of the steps and the steps, given below, aside)
CPU_SIZES = {k: v for k, v in preset_values(CGanTrainConfig, "cpu").items()
             if not isinstance(v, StepShare) and k != "iterations"}  # fmt: skip


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
    assert {"crop", "width", "gen_width", "batch_size"} <= set(CPU_SIZES)
    for key, value in CPU_SIZES.items():
        assert getattr(api, key) == value, key
    assert yaml.safe_load((out / "config.yaml").read_text()) == api.to_dict()


def test_a_given_option_beats_the_preset():
    cfg = CGanTrainConfig.from_dict({"preset": "cpu", "data": "d", "out": "o", "crop": 64})
    assert cfg.crop == [64, 64] and cfg.gen_width == CPU_SIZES["gen_width"]


def test_an_unknown_preset_and_an_ignored_weight_decay_are_refused():
    with pytest.raises(InputError, match="unknown preset 'gpu'"):
        CGanTrainConfig.from_dict({"preset": "gpu", "data": "d", "out": "o"})
    with pytest.raises(InputError, match="weight_decay is for train-seg"):
        CGanTrainConfig.from_dict({"data": "d", "out": "o", "weight_decay": 0.01})


@pytest.mark.parametrize("command", ["train-seg", "train"])
def test_the_command_line_is_built_from_the_config(command):
    """Every training option of the CLI is a config field with the config's choices and default;
    nothing is declared twice (the check of every verb is in test_verbs.py)."""
    import argparse
    import dataclasses

    from cganseg.cli import build_parser

    cls = SegTrainConfig if command == "train-seg" else CGanTrainConfig
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for action in parser._actions:
        if action.dest in ("help", "config", "resume", "quiet"):
            continue
        assert action.dest in fields, action.dest
        assert action.default is None  # so that an option not given does not override a file
    batch = next(a for a in parser._actions if a.dest == "batch_size")
    assert "(default: by --preset: cpu 4, paper 4)" in batch.help  # what --preset auto gives
    lr = next(a for a in parser._actions if a.dest == "lr")
    assert f"(default: {fields['lr'].default})" in lr.help
    instances = next(a for a in parser._actions if a.dest == "instances")
    assert tuple(instances.choices) == ("watershed", "components", "flows")


def test_default_instances_flows_for_every_trainer_components_for_2_classes():
    """Issue 28: one default for all trainers."""
    from cganseg.options import CGanTrainConfig

    base = {"data": "d", "out": "o"}
    for cls in (SegTrainConfig, CGanTrainConfig):
        assert cls.from_dict(base).instances == "flows"
    for cls in (SegTrainConfig, CGanTrainConfig):
        assert cls.from_dict({**base, "n_classes": 2}).instances == "components"
        assert cls.from_dict({**base, "instances": "watershed"}).instances == "watershed"


def test_train_gets_the_measured_recipe_on_the_cpu_preset_and_the_papers_on_paper(capsys):
    """Issue 17: `train --preset cpu` (the default on a CPU) is value.py's best recipe, its
    step counts a share of --iterations; `--preset paper` keeps every lever off."""
    cpu = CGanTrainConfig.from_dict({"preset": "cpu", "data": "d", "out": "o", "iterations": 300})
    assert (cpu.seg_pretrain, cpu.warmup_gen, cpu.ramp_steps) == (2700, 60, 90)
    assert (cpu.seg_extra_updates, cpu.seg_ema, cpu.betas_seg) == (3, 0.99, [0.9, 0.999])
    assert (cpu.perceptual_depth, cpu.perceptual_scale) == (3, 0.5)
    paper = CGanTrainConfig.from_dict({"preset": "paper", "data": "d", "out": "o"})
    assert (paper.seg_pretrain, paper.warmup_gen, paper.seg_extra_updates, paper.seg_ema,
            paper.perceptual_depth) == (0, 0, 0, 0.0, 5)  # fmt: skip
    # a segmenter given to start from replaces the preset's pre-training; given options win
    given = CGanTrainConfig.from_dict({"preset": "cpu", "data": "d", "out": "o",
                                       "init_seg": "seg", "ramp_steps": 7})  # fmt: skip
    assert (given.seg_pretrain, given.ramp_steps, given.warmup_gen) == (0, 7, 60)
    # issue 33: a bare `train` on a CPU is 300 joint steps after 2700 conventional ones, not a
    # day; train-seg keeps its 2000
    bare = CGanTrainConfig.from_dict({"preset": "cpu", "data": "d", "out": "o"})
    assert (bare.iterations, bare.seg_pretrain) == (300, 2700) and paper.iterations == 2000
    assert SegTrainConfig.from_dict({"preset": "cpu", "data": "d", "out": "o"}).iterations == 2000
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "by --preset: cpu 9 x iterations, paper 0" in text


def test_every_float_option_takes_yaml_exponents_without_a_dot(tmp_path):
    """Issue 28: the hand-kept list of float options had drifted (val_fraction was missing, so
    YAML's ``1e-1``, which it reads as a string, was refused); the list now comes from the types."""
    config = tmp_path / "c.yaml"
    config.write_text("data: d\nout: o\nval_fraction: 1e-1\ntest_fraction: 2e-1\nlr: 1e-3\n")
    cfg = SegTrainConfig.load(config)
    assert (cfg.val_fraction, cfg.test_fraction, cfg.lr) == (0.1, 0.2, 0.001)
    with pytest.raises(InputError, match="crop must be two sizes divisible by 16"):
        SegTrainConfig.from_dict({"data": "d", "out": "o", "crop": [40, 48]})
