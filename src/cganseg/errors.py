"""User-facing errors.

Anything the user can fix (a bad file, a wrong option, a missing folder) is raised as
:class:`InputError` with a one-line message that names the file and the problem. The CLI prints
it as ``error: <message>`` and exits with code 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class TrainingDiverged(Exception):
    """A loss or weight became NaN or infinite; the last good checkpoint is kept.

    ``reason`` is the short cause (e.g. "loss became nan by step 12"); the message adds what
    was kept and what to try.
    """

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}; {advice}" if advice else reason)
        self.reason = reason
