"""Which files a command may write: its own outputs, never the user's files or its inputs.

A mistyped output path must not cost a user their ground truth: ``segment runs/A d/images
d/masks`` would replace every mask with a prediction of the same name. So a command writes into
a folder only when the folder is new or empty, or was made by the same command before (its marker
file ``.cganseg-output.json`` says so; running again refreshes the outputs), or when the user
says ``--overwrite``; and never into a folder it reads from. A single output file (``fid
--json``) is written only over a file of its own kind, and never over an input.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cganseg.errors import InputError
from cganseg.runtime.atomic import write_text
from cganseg.runtime.lock import LOCK_NAME, folder_lock

MARKER = ".cganseg-output.json"


def inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies below it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def foreign_entries(folder: Path, own: Iterable[str] = ()) -> list[Path]:
    """What ``folder`` holds besides cganseg's lock and marker files (and ``own`` names)."""
    if not folder.is_dir():
        return []
    skip = {LOCK_NAME, MARKER, *own}
    try:
        return sorted(p for p in folder.iterdir() if p.name not in skip)
    except OSError as exc:
        raise InputError(f"cannot list folder ({exc.strerror or exc})", folder) from None


@contextlib.contextmanager
def open_output(
    out: Path, command: str, inputs: Iterable[Path] = (), overwrite: bool = False
) -> Iterator[None]:
    """Lock ``out`` and claim it (:func:`claim_output`) for the block.

    A folder this made that holds nothing but the marker when the block ends (the command was
    refused, or stopped before its first output) is removed again: a refused command leaves no
    trace.
    """
    out = Path(out)
    new = not out.exists()
    with folder_lock(out, command):
        try:
            claim_output(out, command, inputs, overwrite)
            yield
        finally:
            if new and not foreign_entries(out):
                with contextlib.suppress(OSError):
                    (out / MARKER).unlink()  # then the lock's exit removes the empty folder


def claim_output(
    out: Path, command: str, inputs: Iterable[Path] = (), overwrite: bool = False
) -> None:
    """Refuse ``out`` unless ``command`` may write there (module docstring); mark it as ours."""
    out = Path(out)
    for folder in inputs:
        if out.resolve() == Path(folder).resolve():
            raise InputError(f"is an input folder of {command}; choose another output folder", out)
    if out.exists() and not out.is_dir():
        raise InputError("output folder is a file", out)
    marker = out / MARKER
    ours = False
    if marker.is_file():
        try:
            ours = json.loads(marker.read_text(encoding="utf-8")).get("command") == command
        except (OSError, ValueError, AttributeError):
            ours = False
    if not ours and foreign_entries(out) and not overwrite:
        raise InputError(
            f"holds files that {command} did not write; choose another output folder, or add "
            "--overwrite to write into it anyway",
            out,
        )
    if not ours:
        write_text(marker, json.dumps({"command": command}) + "\n")


def check_output_file(
    path: Path, inputs: Iterable[Path], is_ours: Callable[[Path], bool], overwrite: bool = False
) -> None:
    """Refuse to write ``path`` over an input (or into an input folder), or over a file that
    ``is_ours`` does not recognise, unless ``overwrite``."""
    path = Path(path)
    for item in inputs:
        if inside(path, item):
            raise InputError("is an input of this command; choose another output file", path)
    if path.is_dir():
        raise InputError("is a folder; give a file name", path)
    if path.exists() and not overwrite and not is_ours(path):
        raise InputError(
            "exists and was not written by this command; choose another file, or add "
            "--overwrite to replace it",
            path,
        )
