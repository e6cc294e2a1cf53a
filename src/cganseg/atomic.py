"""Atomic file writes.

A training run can be killed at any moment; a reader must then see either the old file or the
new one, never half of one. Every output of cganseg is written to a temporary file in the target's
own folder (same file system) and moved into place with :func:`os.replace`, which is atomic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cganseg.errors import InputError


def _default_mode() -> int:
    """Permissions a plain ``open(..., "w")`` would give: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: mkstemp makes private (0o600) files; outputs get the permissions of ordinary files instead
FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable(folder: str | Path) -> None:
    """Fail now, in one line, if ``folder`` cannot be made or written to; leaves no trace.

    Called before long work starts, so that hours of training are not lost to a read-only or
    mistyped output path. Folders it had to create for the test are removed again.
    """
    folder = Path(folder)
    created: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot create the output folder: {probe} is a file", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cganseg-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(
            f"cannot write to the output folder ({exc.strerror or exc})", folder
        ) from None
    finally:
        for path in created:  # deepest first; one another process has written into stays
            with contextlib.suppress(OSError):
                path.rmdir()


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
