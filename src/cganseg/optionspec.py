"""Options declared once (issue 28): every option of every command is a dataclass field whose
metadata (a :class:`Spec`) says all there is to say about it.

Why: an option used to be described in up to nine parallel tables (the command-line table, the
choices, the ranges, the float list, the path list, the resume list, two preset tables and
hand-written argparse calls for ten of the twelve verbs), and they drifted (a YAML ``1e-1`` for
``val_fraction`` was refused because a float list missed it). Now the field is the one place:
its type and default come from the dataclass; its help, command-line flag, group, choices, rule
(:mod:`cganseg.checks`), whether it names a path, whether it may change on ``--resume`` and its
value under each ``--preset`` from its :class:`Spec`. The functions below read them: argparse
options with their defaults in the help (:func:`add_arguments`), what the command line gave
(:func:`given`), a verb's options object (:func:`build`), the checks (:func:`check_fields`) and
the preset values (:func:`preset_values`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cganseg import checks
from cganseg.errors import InputError


@dataclass(frozen=True)
class Spec:
    """How one option is offered, checked and kept (the metadata of its dataclass field)."""

    help: str = ""
    #: the --help group it is listed in (None: among the command's own arguments)
    group: str | None = None
    #: its flag (default ``--field-name``); ``positional``: an argument without a flag
    flag: str | None = None
    positional: bool = False
    #: further flags that mean the same (e.g. fid's ``--json`` for ``--out``)
    aliases: tuple[str, ...] = ()
    #: False: set in a config file only (no command-line flag)
    cli: bool = True
    #: the values it may take (None is allowed where the field's type allows it)
    choices: Collection[Any] | None = None
    #: a rule of :mod:`cganseg.checks` (``rule(name, value)``), for values other than None
    rule: Callable[[str, Any], Any] | None = None
    #: command-line text -> config entries (e.g. ``--extra DIR:0.5`` sets two), for values
    #: that are not a plain number or word
    parse: Callable[[str], dict[str, Any]] | None = None
    metavar: str | None = None
    #: what the default means, where the value does not say (e.g. "the backbone's own")
    default_text: str | None = None
    #: list options: ``+`` (one or more after the flag) or ``append`` (the flag repeated)
    nargs: str | None = None
    #: a file or folder: made absolute when a run starts (config.yaml then works from anywhere)
    path: bool = False
    #: may change when a training run is resumed (all other options must match the saved run)
    resumable: bool = False
    #: its value under each ``--preset`` (cganseg.options.PRESET_NAMES)
    presets: Mapping[str, Any] = field(default_factory=dict)
    #: also read as the older trailing positional form (``cganseg segment RUN IN OUT``)
    legacy_positional: bool = False


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           **spec: Any) -> Any:  # fmt: skip
    """A dataclass field with its :class:`Spec` (keyword arguments as Spec's fields)."""
    return field(default=default, default_factory=default_factory, metadata={"spec": Spec(**spec)})


def spec_of(f: dataclasses.Field) -> Spec:
    """The field's :class:`Spec` (an empty one, config-file only, for a field declared without)."""
    return f.metadata.get("spec") or Spec(cli=False)


def specs(cls: type) -> dict[str, tuple[dataclasses.Field, Spec]]:
    """Every field of dataclass ``cls`` with its spec, in declaration order."""
    return {f.name: (f, spec_of(f)) for f in dataclasses.fields(cls)}


def names(cls: type, predicate: Callable[[Spec], bool]) -> tuple[str, ...]:
    """The fields of ``cls`` whose spec satisfies ``predicate`` (e.g. ``lambda s: s.path``)."""
    return tuple(name for name, (_, spec) in specs(cls).items() if predicate(spec))


def default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# ------------------------------------------------------------------------------- types
#: Python types accepted for each annotation used by option fields
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
    "Path": (Path,),
    "list[int]": (list, tuple),
    "list[float]": (list, tuple),
    "list[str]": (list, tuple),
    "dict[str, Any]": (dict,),
}
#: the type of each item of a list option
_ITEM_TYPES: dict[str, type] = {"list[int]": int, "list[float]": float, "list[str]": str}


def _parts(annotation: str) -> list[str]:
    return [part.strip() for part in annotation.split("|")]


def float_fields(cls: type) -> list[str]:
    """The fields of ``cls`` whose type is a float (YAML reads ``1e-3`` without a dot as a
    string; these are turned into numbers)."""
    return [f.name for f in dataclasses.fields(cls) if "float" in _parts(str(f.type))]


def check_type(name: str, annotation: str, value: Any, bad: Callable[[str], Exception]) -> None:
    """Refuse ``value`` (``bad(message)`` makes the error) unless it has the annotated type;
    numbers must be finite, list items of the item type (YAML ``crop: [true, 64]`` is no size)."""
    allowed = tuple(t for part in _parts(annotation) for t in _TYPES[part])
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise bad(f"{name} must be {annotation}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(f"{name} must be a finite number, got {value}")
    if isinstance(value, list | tuple):
        item = next(t for part, t in _ITEM_TYPES.items() if part in annotation)
        ok = (int, float) if item is float else (item,)
        for v in value:
            if isinstance(v, bool) or not isinstance(v, ok):
                raise bad(f"{name} must be {annotation}, got {value!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise bad(f"{name} must hold finite numbers, got {value!r}")


def check_fields(obj: Any, source: str | Path | None = None, prefix: str = "option ",
                 flags: bool = False) -> None:  # fmt: skip
    """Refuse (one-line InputError, ``prefix`` + the words of the problem) a field of dataclass
    ``obj`` of the wrong type, outside its choices or failing its rule; ``flags``: name it by
    its command-line flag (a verb's options) rather than its field name (a config's)."""
    for field_name, (f, spec) in specs(type(obj)).items():
        value = getattr(obj, field_name)
        name = flag_of(field_name, spec) if flags and not spec.positional else field_name
        check_type(name, str(f.type), value, lambda m: InputError(prefix + m, source))
        if value is None:
            continue
        if spec.choices is not None:
            values = value if spec.nargs and isinstance(value, list | tuple) else [value]
            if any(v not in spec.choices for v in values):
                raise InputError(f"{prefix}{name} must be one of "
                                 f"{', '.join(map(str, spec.choices))}, got {value!r}",
                                 source)  # fmt: skip
        if spec.rule is not None:
            checks.checked(spec.rule, name, value, source, prefix)


# ------------------------------------------------------------------------ presets
def preset_values(cls: type, preset: str, group: str | None = None) -> dict[str, Any]:
    """The values ``--preset preset`` gives the fields of ``cls`` (only those of ``group``
    when given)."""
    return {name: spec.presets[preset] for name, (_, spec) in specs(cls).items()
            if preset in spec.presets and (group is None or spec.group == group)}  # fmt: skip


# ------------------------------------------------------------------- the command line
def flag_of(name: str, spec: Spec) -> str:
    return spec.flag or "--" + name.replace("_", "-")


def _shown(name: str, value: Any, spec: Spec) -> str:
    if value is None and spec.default_text is not None:
        return spec.default_text
    if isinstance(value, list | tuple):
        return "x".join(map(str, value)) if name == "crop" else ",".join(map(str, value))
    return "none" if value is None or value == "" else str(value)


def _default_text(name: str, f: dataclasses.Field, spec: Spec) -> str:
    if spec.presets:  # what --preset (auto by default) sets
        return "by --preset: " + ", ".join(f"{preset} {_shown(name, value, spec)}"
                                           for preset, value in spec.presets.items())  # fmt: skip
    if spec.default_text is not None:
        return spec.default_text
    return _shown(name, default_of(f), spec)


def _converter(annotation: str) -> Callable[[str], Any]:
    """An argparse ``type`` for a field of this annotation: the text as its number type, or as
    text where the field also takes text (``--diameter auto``). Values are checked against their
    rules afterwards (:func:`check_fields`), so a bad value gets the same one-line error as from
    a config file."""
    parts = [p for p in _parts(annotation) if p != "None"]
    parts = [{"list[int]": "int", "list[float]": "float", "list[str]": "str"}.get(p, p)
             for p in parts]  # fmt: skip
    base = {"int": int, "float": float, "Path": Path}.get(parts[0] if parts else "str", str)
    if base in (int, float) and "str" in parts:

        def number_or_text(text: str) -> Any:
            try:
                return base(text)
            except ValueError:
                return text

        return number_or_text
    return base


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Collection[str] = (),
                  enforce_required: bool = True) -> None:  # fmt: skip
    """An argparse argument for every command-line field of ``cls``; its default (the
    dataclass's, or what the preset sets) is shown in its help. Every argument defaults to None,
    so :func:`given` tells what the command line gave (precedence over config files).
    ``enforce_required``: a field without default must be given (False where a config file may
    give it)."""
    groups: dict[str | None, Any] = {None: parser}
    for name, (f, spec) in specs(cls).items():
        if not spec.cli or name in exclude:
            continue
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        where = groups[spec.group]
        kwargs: dict[str, Any] = {"help": spec.help, "default": None}
        annotation = str(f.type)
        if annotation == "bool":
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs["type"] = str if spec.parse else _converter(annotation)
            if spec.nargs == "append":
                kwargs["action"] = "append"
            elif spec.nargs:
                kwargs["nargs"] = spec.nargs
            if spec.choices is not None:
                kwargs["choices"] = list(spec.choices)
            if spec.metavar or spec.choices is None or spec.nargs:
                kwargs["metavar"] = spec.metavar or (
                    name.upper() if spec.positional else flag_of(name, spec).lstrip("-")
                    .replace("-", "_").upper())
            if not required(f):
                kwargs["help"] += f" (default: {_default_text(name, f, spec)})"
        if spec.positional:
            if not required(f):
                kwargs["nargs"] = "?"
            where.add_argument(name, **kwargs)
            continue
        if spec.legacy_positional:  # read by given(); hidden from the help
            parser.add_argument(f"{name}_positional", nargs="?", type=kwargs.get("type"),
                                metavar=name.upper(), help=argparse.SUPPRESS)  # fmt: skip
        elif enforce_required and required(f):
            kwargs["required"] = True
        where.add_argument(flag_of(name, spec), *spec.aliases, dest=name, **kwargs)


def merge_positionals(cls: type, values: argparse.Namespace) -> str | None:
    """Fold each older trailing positional form (``legacy_positional``) into its option, in
    place; returns what is wrong (two different outputs, or none where one is required) for the
    parser to report with its usage, else None."""
    for name, (f, spec) in specs(cls).items():
        if not spec.legacy_positional:
            continue
        flagged, positional = getattr(values, name, None), vars(values).pop(f"{name}_positional",
                                                                            None)  # fmt: skip
        flag = flag_of(name, spec)
        if flagged is not None and positional is not None and flagged != positional:
            return f"two outputs given ({positional} and {flag} {flagged}); give {flag} only"
        setattr(values, name, flagged if flagged is not None else positional)
        if getattr(values, name) is None and required(f):
            return f"the following arguments are required: {flag}"
    return None


def given(cls: type, values: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``cls`` the command line gave (parsed argparse ``values``, their older
    positional forms merged by :func:`merge_positionals`)."""
    values = vars(values) if isinstance(values, argparse.Namespace) else values
    out: dict[str, Any] = {}
    for name, (_, spec) in specs(cls).items():
        value = values.get(name)
        if spec.cli and value is not None:
            out.update(spec.parse(value) if spec.parse else {name: value})
    return out


def build(cls: type, values: argparse.Namespace | Mapping[str, Any]) -> Any:
    """A verb's options object from the parsed command line (or a mapping given in code): what
    was given over the dataclass's defaults, checked (:func:`check_fields`, then ``cls.check``
    where it has one). A rule's message names the flag for a command line, the field in code."""
    entries = given(cls, values)
    missing = [flag_of(n, s) for n, (f, s) in specs(cls).items()
               if s.cli and required(f) and n not in entries]  # fmt: skip
    if missing:
        raise InputError(f"the following arguments are required: {', '.join(missing)}")
    obj = cls(**entries)
    check_fields(obj, prefix="", flags=isinstance(values, argparse.Namespace))
    if hasattr(obj, "check"):
        obj.check()
    return obj
