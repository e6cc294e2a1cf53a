"""Progress bars: a bar in a terminal, a few plain lines in a log file (issue 33)."""

from __future__ import annotations

import io

from cganseg.runtime.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream: io.StringIO, steps: int = 2000) -> str:
    bar = progress_bar(total=steps, desc="train-seg", unit="step", file=stream, mininterval=0)
    for step in range(steps):
        bar.update(1)
        bar.set_postfix({"loss": f"{1 / (step + 1):.4f}"}, refresh=False)
    bar.close()
    return stream.getvalue()


def test_a_log_file_gets_plain_lines_not_carriage_returns():
    text = _run(io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert 2 <= len(lines) <= 4, lines  # the start, the end (and at most a line a minute)
    assert lines[-1].startswith("train-seg: 100%") and "2000/2000" in lines[-1]


def test_a_terminal_keeps_the_redrawn_bar():
    text = _run(Terminal(), steps=50)
    assert "\r" in text and "50/50" in text


def test_a_disabled_bar_writes_nothing():
    stream = io.StringIO()
    for _ in progress_bar(range(10), file=stream, disable=True):
        pass
    assert stream.getvalue() == ""
