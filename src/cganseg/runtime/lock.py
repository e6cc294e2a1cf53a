"""One writer per output folder: a lock file held by the live process.

Two training runs started into the same ``--out`` (a repeated job array index, a second terminal)
would both write config.yaml, checkpoints and metrics.csv, and the folder would then describe
neither. So every command that writes a folder first creates ``FOLDER/.cganseg.runtime.lock`` with
``O_EXCL`` (atomic on local and NFSv3+ file systems), recording the process id, its start time
and the host. A second writer finds it and stops with one line naming the holder. A lock whose
process is gone (same host, no such pid, or a pid now used by a later process) is stale and taken
over; a lock of another host cannot be checked from here, so the message says how to remove it.
The lock is removed when the command ends, whatever the reason (kept only by SIGKILL or a power
cut, and then stale).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from cganseg.errors import InputError, WriteError
from cganseg.runtime.atomic import made_folder, owned_folder

LOCK_NAME = ".cganseg.runtime.lock"
#: a lock file still empty after this many seconds belongs to a writer that died creating it
_EMPTY_GRACE_S = 30.0


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux), to tell it from a later reuse of the
    same pid; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user
    now = _start_time(pid)
    return started is None or now is None or now == started


def _describe(holder: dict) -> str:
    what = holder.get("command") or "cganseg"
    since = holder.get("since")
    when = f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}" if since else ""
    return f"process {holder.get('pid')} on {holder.get('host')} ({what}{when})"


#: the largest process id of any system (Linux caps pids at 2^22)
_PID_MAX = 2**31 - 1
#: a lock file is a line of JSON; anything longer was not written by cganseg
_LOCK_MAX_BYTES = 4096


class _Garbled(Exception):
    """A lock file that is not one cganseg wrote: the reason, in words."""


def _holder(text: str) -> dict:
    """The holder a lock file's text records, each field checked; :class:`_Garbled` otherwise.
    An empty text is an empty holder (a writer between creating and filling the file)."""
    if not text:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        raise _Garbled("not JSON") from None
    if not isinstance(holder, dict):
        raise _Garbled("not a JSON object")
    pid, since = holder.get("pid"), holder.get("since")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= _PID_MAX:
        raise _Garbled(f"pid {pid!r} is no process id")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)
                              or not 0 <= since < 2**40):  # fmt: skip
        raise _Garbled(f"since {since!r} is no time")
    for key in ("host", "command", "started"):
        if holder.get(key) is not None and not isinstance(holder[key], str):
            raise _Garbled(f"{key} {holder[key]!r} is not a text")
    return holder


def _read(path: Path) -> dict | None:
    """The holder recorded in a lock file; None when the file is gone. A file that cganseg did
    not write (garbled, other bytes, absurd fields) is reported with the file to delete: its
    holder cannot be known, so it is never taken over silently."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_LOCK_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read the lock file ({exc.strerror or exc})", path) from None
    try:
        if len(raw) > _LOCK_MAX_BYTES:
            raise _Garbled(f"more than {_LOCK_MAX_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Garbled("not text") from None
        return _holder(text)
    except _Garbled as exc:
        raise InputError(
            f"is not a lock file cganseg wrote ({exc}); if no cganseg command is using "
            f"{path.parent}, delete {path}",
            path,
        ) from None


def _is_stale(path: Path, holder: dict) -> bool:
    if not holder:  # empty: being written right now, or left by a crash then
        try:
            return time.time() - path.stat().st_mtime > _EMPTY_GRACE_S
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False
    return not _alive(holder["pid"], holder.get("started"))


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; InputError when another live process holds it.

    Creates ``folder`` if needed; a folder created here and left empty is removed again, so a
    command refused later (bad input) leaves no trace.
    """
    path = Path(folder) / LOCK_NAME
    me = {
        "pid": os.getpid(),
        "started": _start_time(os.getpid()),
        "host": socket.gethostname(),
        "command": command,
        "since": round(time.time()),
    }
    with made_folder(folder):
        _acquire(path, me)
        try:
            with owned_folder(folder):
                yield
        finally:
            with contextlib.suppress(OSError, InputError):
                if _read(path) == me:
                    path.unlink()


def _acquire(path: Path, me: dict) -> None:
    for _ in range(3):  # a stale lock removed here may be re-taken by a racing process
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                continue
            if not _is_stale(path, holder):
                raise InputError(
                    f"in use by {_describe(holder)}; wait for it to end or stop it (if it is "
                    f"gone, delete {path})",
                    path.parent,
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        except OSError as exc:
            raise WriteError(path, exc) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(me))
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise WriteError(path, exc) from None
        return
    raise InputError("could not take the lock: other processes keep taking it", path)
