"""Issue 18, item 3: the README's commands are true. The quick start runs (fewer steps) on the
bundled demo data, offline; every other ``cganseg`` command of the README is parsed by the CLI,
so a renamed option breaks this test, not a user."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cganseg.cli import main, parse
from cganseg.errors import InputError

README = Path(__file__).resolve().parents[1] / "README.md"


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """The ``cganseg`` command lines of a block as argument lists (continuations joined,
    comments dropped; ``torchrun ... -m cganseg`` and ``.venv/bin/cganseg`` count too)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word == "cganseg" or word.endswith("/cganseg"):
                if i == 0 or words[i - 1] == "-m":
                    out.append(words[i + 1 :])
                break
    return out


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    return _bash_blocks(text[text.index("## Quick start") :])[0]


def test_every_readme_command_is_one_the_cli_takes():
    commands = [c for b in _bash_blocks(README.read_text(encoding="utf-8")) for c in _commands(b)]
    assert len(commands) > 15
    for args in commands:
        if not args or args[0] == "demo":
            continue  # `make demo` runs it; its parse is below
        parse(args)  # SystemExit (usage error) fails the test
    parse(["demo", "--out", "x"])


def _shrunk(args: list[str]) -> list[str]:
    """The same command with a couple of training steps and a few synthetic masks."""
    small = {"--iterations": "2", "--n": "3"}
    return [small.get(args[i - 1], a) if i else a for i, a in enumerate(args)]


@pytest.mark.slow
def test_the_quick_start_runs_offline_on_the_demo_data(tmp_path, monkeypatch):
    from cganseg.models.vgg import hed_weights_path

    try:
        hed_weights_path()
    except InputError:
        pytest.skip("the quick start's cGAN-Seg run needs `cganseg fetch-weights hed-vgg16` "
                    "(make demo and make test fetch it)")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    commands = _commands(_quick_start())
    assert [c[0] for c in commands][:3] == ["demo-data", "train-seg", "segment"]
    for args in commands:
        assert main([*_shrunk(args), *(["--quiet"] if args[0] != "demo-data" else [])]) == 0, args
    assert (tmp_path / "runs" / "unet_synth" / "best.pt").is_file()
    assert len(list((tmp_path / "synth_pairs" / "images").iterdir())) == 3
    assert (tmp_path / "eval" / "metrics.json").is_file()


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_the_notebook_example_trains_segments_and_scores_arrays(tmp_path, monkeypatch, capsys):
    """Issue 33: the README's notebook example (train_seg on arrays, segment, evaluate) runs
    as written, with 2 steps instead of 500."""
    example = next(b for b in _python_blocks(README.read_text(encoding="utf-8"))
                   if "cganseg.train_seg(" in b)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    exec(compile(example.replace("iterations=500", "iterations=2, progress=False"),
                 "README example", "exec"), {})  # fmt: skip
    f1 = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= f1 <= 1.0
    assert (tmp_path / "runs" / "nb" / "best.pt").is_file()
    assert len(list((tmp_path / "runs" / "nb_data" / "images").iterdir())) == 30


def _cost(runs: list[dict], arm: str) -> str:
    """``median CPU-minutes (min-max over N runs)`` of one arm's runs in fewshot.json."""
    minutes = sorted(r["cpu_s"] / 60 for r in runs if r["arm"] == arm)
    median = minutes[len(minutes) // 2] if len(minutes) % 2 else sum(
        minutes[len(minutes) // 2 - 1 : len(minutes) // 2 + 1]) / 2  # fmt: skip
    return f"{median:.0f} CPU-minutes ({minutes[0]:.0f}-{minutes[-1]:.0f} over {len(minutes)} runs)"


def test_start_here_states_the_cpu_costs_the_benchmark_recorded():
    """Issue 33: the CPU costs on the README's first screen are read back from
    benchmarks/results/fewshot.json, so a new measurement that changes them fails here until
    the README says it."""
    import json

    record = json.loads((README.parent / "benchmarks/results/fewshot.json").read_text())
    text = README.read_text(encoding="utf-8")
    start = text[text.index("## Start here") : text.index("## Set-up")]
    for arm in ("finetune", "finetune-lr0.001-steps1500", "scratch"):
        assert _cost(record["runs"], arm) in " ".join(start.split()), arm


def test_the_readme_states_what_make_demo_and_a_bare_train_cost():
    """Issue 33: ``make demo``'s CPU-minutes are the ones benchmarks/demo_time.py recorded, and
    a bare ``train``'s are what its start line estimates for the CPU defaults."""
    import json

    from cganseg.options import CGanTrainConfig
    from cganseg.training.cgan_trainer import train_cpu_s
    from cganseg.training.pace import cpu_minutes

    text = " ".join(README.read_text(encoding="utf-8").split())
    demo = json.loads((README.parent / "benchmarks/results/demo_time.json").read_text())
    assert f"make demo` costs **{demo['cpu_s'] / 60:.0f} CPU-minutes**" in text
    bare = CGanTrainConfig.from_dict({"data": "d", "out": "o", "device": "cpu"})
    assert f"a bare `train` on a CPU is {cpu_minutes(train_cpu_s(bare))}" in text
