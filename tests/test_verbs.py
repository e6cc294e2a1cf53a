"""Every verb's options come from its dataclass (issue 28, item 2): the parser holds exactly the
command-line fields of the verb's options class (and, for training, of the run's config), every
option with a default says it in --help, and the options object built from a bare command line
carries the dataclass's defaults."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from cganseg import optionspec
from cganseg.cli import BY_NAME, COMMANDS, build_parser, main, parse
from cganseg.errors import InputError
from cganseg.verbs import SegmentOptions

#: the smallest command line of each verb (its required arguments)
MINIMAL = {
    "train-seg": ["--data", "d", "--out", "o"],
    "train": ["--data", "d", "--out", "o"],
    "segment": ["run", "in", "--out", "o"],
    "evaluate": ["gt", "pred", "--out", "o"],
    "synth-masks": ["masks", "--out", "o"],
    "generate": ["run", "masks", "--out", "o"],
    "fid": ["real", "fake"],
    "export": ["run", "--out", "m.zip"],
    "experiment": ["e.yaml"],
    "demo": [],
    "demo-data": ["--out", "o"],
    "fetch-weights": ["hed-vgg16"],
    "models": [],
    "curve": ["data", "--out", "o"],
    "suggest": ["run", "in", "--out", "o"],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_all_fifteen_verbs_are_declared_once():
    assert [c.name for c in COMMANDS] == list(MINIMAL)
    assert set(_subparsers()) == set(MINIMAL)


@pytest.mark.parametrize("name", list(MINIMAL))
def test_a_verbs_arguments_are_its_dataclass_fields(name):
    command = BY_NAME[name]
    parser = _subparsers()[name]
    classes = [command.options] + ([command.config] if command.config else [])
    expected = set()
    for cls in classes:
        exclude = getattr(cls, "cli_exclude", ())
        expected |= {n for n, (_, spec) in optionspec.specs(cls).items()
                     if spec.cli and n not in exclude}  # fmt: skip
    dests = {a.dest for a in parser._actions
             if a.dest != "help" and not a.dest.endswith("_positional")}  # fmt: skip
    assert dests == expected
    assert command.options.__doc__ and parser.description  # the verb's --help says what it does
    for action in parser._actions:
        if action.dest == "help" or action.help == argparse.SUPPRESS:
            continue
        assert action.help, action.dest
        field = {f.name: f for cls in classes for f in dataclasses.fields(cls)}[action.dest]
        flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if not flag and not optionspec.required(field):
            assert "(default: " in action.help, (name, action.dest)


@pytest.mark.parametrize("name", [n for n in MINIMAL if not BY_NAME[n].config])
def test_a_bare_command_line_gives_the_dataclass_defaults(name):
    command = BY_NAME[name]
    options = optionspec.build(command.options, parse([name, *MINIMAL[name]]))
    assert isinstance(options, command.options)
    for field in dataclasses.fields(options):
        if not optionspec.required(field):
            assert getattr(options, field.name) == optionspec.default_of(field), field.name


def test_given_values_are_typed_and_checked_by_their_rules(capsys):
    args = parse(["segment", "run", "in", "--out", "o", "--tile-size", "256",
                  "--diameter", "auto", "--save-format", "tif", "rois"])  # fmt: skip
    options = optionspec.build(SegmentOptions, args)
    assert (options.tile_size, options.diameter, options.save_format) == (256, "auto",
                                                                          ["tif", "rois"])
    # a rule is checked once, by the options class: one line naming the flag, exit code 2
    assert main(["segment", "run", "in", "--out", "o", "--tile-size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --tile-size must be an integer in [16, 8192], got 8"


def test_the_older_positional_output_is_read_and_a_second_one_refused(capsys):
    options = optionspec.build(SegmentOptions, parse(["segment", "run", "in", "o"]))
    assert str(options.out) == "o"
    with pytest.raises(SystemExit):
        parse(["segment", "run", "in", "o", "--out", "p"])
    assert "two outputs given (o and --out p); give --out only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "run", "in"])
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_options_of_a_verb_are_refused_by_their_rules_when_built_in_code():
    with pytest.raises(InputError, match="tile_size must be an integer in"):  # (not argparse)
        optionspec.build(SegmentOptions, {"checkpoint": Path("r"), "input": Path("i"),
                                          "out": Path("o"), "tile_size": 3})  # fmt: skip


def test_no_side_table_of_options_is_left():
    """The tables that once described options beside the dataclasses are gone (issue 28)."""
    import cganseg.options as options
    import cganseg.training.run as run

    for name in ("CLI", "CHOICES", "_RANGES", "_POSITIVE", "_RULES", "PATH_OPTIONS", "PRESETS",
                 "RECIPES", "FLOAT_OPTIONS"):  # fmt: skip
        assert not hasattr(options, name), name
    assert not hasattr(run, "RESUMABLE_OVERRIDES")
