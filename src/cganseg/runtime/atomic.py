"""Atomic file writes.

A training run can be killed at any moment; a reader must then see either the old file or the
new one, never half of one. Every output of cganseg is written to a temporary file in the target's
own folder (same file system) and moved into place with :func:`os.replace`, which is atomic.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cganseg.errors import InputError, WriteError


def _default_mode() -> int:
    """Permissions a plain ``open(..., "w")`` would give: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: mkstemp makes private (0o600) files; outputs get the permissions of ordinary files instead
FILE_MODE = _default_mode()


#: the output folders the running command owns (:func:`owned_folder`), lexically absolute and
#: resolved; a write below one of them never passes through a symbolic link
_OWNED: contextvars.ContextVar[tuple[tuple[Path, Path], ...]] = contextvars.ContextVar(
    "cganseg_owned_folders", default=()
)


@contextlib.contextmanager
def owned_folder(folder: str | Path) -> Iterator[None]:
    """Inside the block, every write of this module below ``folder`` is refused when it would
    pass through a symbolic link (or leave ``folder`` by one): cganseg makes no links, so a link
    inside a folder it owns was put there by someone else, and writing through it (a symlinked
    ``overlays/``) would write, and overwrite, files outside the folder. Links found in the
    folder now are refused at once, before any work (:func:`links_inside`)."""
    folder = Path(os.path.abspath(folder))
    link = next(iter(links_inside(folder)), None)
    if link is not None:
        raise InputError(_LINK_MESSAGE.format(folder=folder), link)
    token = _OWNED.set((*_OWNED.get(), (folder, folder.resolve())))
    try:
        yield
    finally:
        _OWNED.reset(token)


_LINK_MESSAGE = (
    "is a symbolic link inside the output folder {folder}; cganseg writes there only through "
    "folders it made, never through a link: remove the link, or choose another output folder"
)


def links_inside(folder: Path) -> Iterator[Path]:
    """Symbolic links below ``folder`` (not following them), in no particular order."""
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                yield Path(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))


def check_no_link(path: str | Path) -> None:
    """Refuse ``path`` when, below an owned folder, one of its parent folders is a symbolic
    link (module docstring of :func:`owned_folder`)."""
    path = Path(os.path.abspath(path))
    for lexical, resolved in _OWNED.get():
        for root in (lexical, resolved):
            if root not in path.parents:
                continue
            probe = root
            for part in path.relative_to(root).parts[:-1]:
                probe = probe / part
                if probe.is_symlink():
                    raise InputError(_LINK_MESSAGE.format(folder=lexical), probe)


#: the longest file name (in bytes) that common file systems (ext4, XFS, NTFS, APFS) allow
NAME_MAX = 255


def _temp_prefix(path: Path) -> str:
    """``.NAME.`` for the temporary file of ``path``, NAME shortened so the whole temporary name
    (prefix, 8 random characters, ``.tmp`` and the suffix) fits :data:`NAME_MAX` bytes."""
    suffix = ".tmp" + path.suffix
    room = NAME_MAX - len(suffix.encode()) - 8 - 2
    name = path.name.encode()[: max(room, 1)].decode("utf-8", errors="ignore")
    return f".{name}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    An OS error while the block writes (full disk, quota, a folder gone) becomes a one-line
    :class:`~cganseg.errors.WriteError` naming ``path``; the temporary file is removed and the
    previous ``path`` stays as it was.
    """
    path = Path(path)
    check_no_link(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=_temp_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent
        )
        os.close(fd)
    except OSError as exc:
        raise WriteError(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as exc:
        raise WriteError(path, exc) from None
    finally:
        if tmp_path.is_symlink() or tmp_path.exists():
            with contextlib.suppress(OSError):
                tmp_path.unlink()


@contextlib.contextmanager
def staged_files(folder: str | Path) -> Iterator[Path]:
    """Yield a staging folder inside ``folder``; move every file of it into ``folder`` at the end.

    For outputs made of several files (an evaluation report): a failure part-way (a full disk)
    leaves none of the new files, not a report whose JSON and plot disagree. The moves are
    renames within one file system, which need no space.
    """
    folder = Path(folder)
    check_no_link(folder / ".staging")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    except OSError as exc:
        raise WriteError(folder, exc) from None
    try:
        try:
            yield staging
        except WriteError as exc:
            if exc.path is not None and staging in exc.path.parents:
                raise WriteError(folder / exc.path.relative_to(staging), exc.reason) from None
            raise
        try:
            for file in sorted(p for p in staging.rglob("*") if p.is_file()):
                target = folder / file.relative_to(staging)
                check_no_link(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target)
        except OSError as exc:
            raise WriteError(folder, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def made_folder(folder: str | Path) -> Iterator[Path]:
    """Create ``folder`` (and missing parents) for the block; at its end remove those of them
    it created that are still empty, so a command refused part-way leaves no trace."""
    folder = Path(folder)
    check_no_link(folder / ".made")
    created: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot create the output folder: {probe} is a file", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output folder ({exc.strerror or exc})", folder
        ) from None
    try:
        yield folder
    finally:
        for path in created:  # deepest first; one another process has written into stays
            with contextlib.suppress(OSError):
                path.rmdir()


def check_writable(folder: str | Path) -> None:
    """Fail now, in one line, if ``folder`` cannot be made or written to; leaves no trace.

    Called before long work starts, so that hours of training are not lost to a read-only or
    mistyped output path. Folders it had to create for the test are removed again.
    """
    with made_folder(folder) as made:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".cganseg-write-test-", dir=made)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise InputError(
                f"cannot write to the output folder ({exc.strerror or exc})", made
            ) from None


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
