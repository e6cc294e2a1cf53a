"""Issue 18, item 5: one command-line convention for every command (inputs positional, the output
``--out``), help for every option, and errors in the words of the command that was run."""

from __future__ import annotations

import argparse

import pytest
from tests.helpers import make_dataset, tiny_seg_config

from cganseg.cli import build_parser, main, parse
from cganseg.training.seg_trainer import train_segmenter


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_cganseg_alone_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cganseg") and "segment" in out and "train-seg" in out


def test_an_unknown_option_gets_the_usage_of_its_command(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["segment", "run", "images", "--out", "labels", "--bogus"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "usage: cganseg segment" in err and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("command, inputs", [
    ("segment", ["run", "images"]), ("generate", ["run", "masks"]),
    ("synth-masks", ["masks"]), ("evaluate", ["gt", "pred"]),
])  # fmt: skip
def test_every_writing_command_takes_its_output_as_out(command, inputs, capsys):
    args = parse([command, *inputs, "--out", "result"])
    assert str(args.out) == "result"
    if command != "evaluate":  # older scripts: the positional output still works
        assert str(parse([command, *inputs, "result"]).out) == "result"
        with pytest.raises(SystemExit):
            parse([command, *inputs, "a", "--out", "b"])
        assert "give --out only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse([command, *inputs])
    assert "--out" in capsys.readouterr().err
    assert str(parse(["fid", "real", "fake", "--json", "fid.json"]).out) == "fid.json"


def test_every_command_has_a_description_and_every_option_a_help_with_its_default():
    for name, command in _commands().items():
        assert command.description, name
        for action in command._actions:
            if action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}"
            takes_value = action.option_strings and action.nargs != 0
            if takes_value and action.default not in (None, False):
                assert "default" in action.help, f"{name} {action.option_strings}"
    scene = _commands()["synth-masks"]
    options = scene._option_string_actions
    assert "--scene" in options and "--layout" not in options


def test_generate_on_a_train_seg_run_says_which_run_has_a_generator(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=6, size=(48, 48))
    train_segmenter(tiny_seg_config(data, tmp_path / "run", iterations=2, val_every=2,
                                    test_fraction=0.0), progress=False)  # fmt: skip
    code = main(["generate", str(tmp_path / "run"), str(data / "masks"), "--out",
                 str(tmp_path / "pairs")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "holds no generator" in err and "`cganseg train`" in err


def test_every_verb_is_one_entry_of_the_command_registry():
    """Issue 28: a verb's parser, its run function and the rules main() applies around it
    (torchrun, output check, lock) are declared once, in cganseg.cli.COMMANDS."""
    from cganseg.cli import COMMANDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [c.name for c in COMMANDS]
    assert {c.name for c in COMMANDS if c.torchrun} == {"train", "train-seg", "segment"}
    assert {c.name for c in COMMANDS if c.lock} == {"synth-masks", "generate", "demo"}
