"""User-facing errors.

Anything the user can fix (a bad file, a wrong option, a missing folder) is raised as
:class:`InputError` with a one-line message that names the file and the problem. The CLI prints
it as ``error: <message>`` and exits with code 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a newline in a file name becomes ``\\n``), so
    that an error stays the one line that scripts and users read."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


class InputError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class WriteError(InputError):
    """The operating system refused a write (full disk, quota, read-only or vanished folder).

    Reported like a user error (one line naming the file, exit code 2): the user frees space or
    chooses another folder; what was written before is whole (every file is written atomically).
    """

    def __init__(self, path: str | Path, exc: OSError | str) -> None:
        self.reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        super().__init__(f"cannot write ({self.reason})", path)


class TrainingDiverged(Exception):
    """A loss or weight became NaN or infinite; the last good checkpoint is kept.

    ``reason`` is the short cause (e.g. "loss became nan by step 12"); the message adds what
    was kept and what to try.
    """

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}; {advice}" if advice else reason)
        self.reason = reason
