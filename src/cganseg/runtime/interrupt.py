"""Stopping on SIGINT / SIGTERM at a safe point: after the current step, image or file.

A signal that lands in the middle of a training step would leave the networks half-updated, and
one that lands in the middle of a write would leave half a file; schedulers (SLURM, Kubernetes,
torchrun) send SIGTERM before they kill. So while :func:`graceful_stop` is active, the first
SIGINT or SIGTERM only sets a flag; long loops call :func:`check` (or read :func:`requested`)
between units of work, finish the unit, save what lets them resume, and raise
:class:`Interrupted`. A second signal interrupts at once (``KeyboardInterrupt``); every file
is written atomically, so even then the previous checkpoint and finished outputs stay intact.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: signal.Signals | None = None
_depth = 0


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal and taken at a safe point; ``signum`` says which."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


def requested() -> signal.Signals | None:
    """The signal that asked for a stop, or None."""
    return _requested


def check(message: str) -> None:
    """Raise :class:`Interrupted` with ``message`` if a stop was asked for."""
    if _requested is not None:
        raise Interrupted(f"{message} ({_requested.name})", _requested)


def _handler(signum: int, frame: object) -> None:
    global _requested
    if _requested is not None:
        raise KeyboardInterrupt
    _requested = signal.Signals(signum)
    print(
        f"\n{_requested.name}: stopping after the current step or file "
        "(send it again to stop at once)",
        file=sys.stderr,
        flush=True,
    )


def ignore_stop_signals(worker_id: int = 0) -> None:
    """For helper processes (data-loader workers; a ``worker_init_fn``): the main process decides.

    A terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the group; a worker
    killed by one would fail the main process's next batch before it could save.
    """
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Catch SIGINT and SIGTERM as stop requests inside the block (main thread only; nests)."""
    global _requested, _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS} if _depth == 0 else {}
    for s in previous:
        signal.signal(s, _handler)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for s, handler in previous.items():
                signal.signal(s, handler)
            _requested = None
