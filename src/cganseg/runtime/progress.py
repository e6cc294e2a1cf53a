"""Progress bars that suit a terminal, a notebook and a log file alike (issue 33).

tqdm redraws its bar with carriage returns several times a second. In a terminal that is one
line; in a log file (``nohup cganseg train ... > log``, a cluster job) it is thousands of
lines glued by ``\\r`` that ``less`` and ``tail`` show as one unreadable line. So every loop of
the package takes its bar from :func:`progress_bar`: in a terminal or a notebook it is tqdm's own;
when the output is not a terminal it writes one plain line per :data:`LOG_INTERVAL` seconds
(and the last), with no carriage returns or cursor moves.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as notebook_or_std
from tqdm.std import tqdm as std_tqdm

#: seconds between two progress lines when the output is a file or a pipe
LOG_INTERVAL = 60.0


class LineFile:
    """A stream for tqdm that turns each redraw into a line of its own: carriage returns become
    line ends, blank redraws (a bar clearing itself) and cursor-up codes are dropped."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for line in text.replace("\x1b[A", "").replace("\r", "\n").split("\n"):
            if line.strip():
                self.stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, as lines in a log file when the output is not a terminal.

    A notebook keeps tqdm.auto's widget (its output is no terminal either, but redraws well).
    """
    stream = kwargs.pop("file", None) or sys.stderr
    in_notebook = notebook_or_std is not std_tqdm
    if in_notebook or _is_terminal(stream) or kwargs.get("disable"):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.update(file=LineFile(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL,
                  dynamic_ncols=False, ncols=100, leave=True, position=None)  # fmt: skip
    return std_tqdm(iterable, **kwargs)
