"""One writer per model folder: an operating-system file lock (``filelock``).

``contrasyn fit`` holds the lock of its ``--out`` folder for the whole run (training,
checkpoints, ``metrics.jsonl``, the final save, ``samples.png``); ``contrasyn threshold`` and
``contrasyn export`` hold it while they rewrite the folder. A second writer does not wait: it
stops at once with one line naming the folder and the holder (process id, host, command and
start time, read from a small sidecar the holder writes).

The lock is ``FOLDER/.contrasyn.api.lock``, locked with ``flock`` (``LockFileEx`` on Windows)
through ``filelock.FileLock``. The operating system releases it when the holding process
ends, however it ends (``kill -9`` included), so a stale lock never blocks. The sidecar
``FOLDER/.contrasyn.api.lock.holder`` is removed on release; one left by a killed process is
overwritten by the next holder. A writer that leaves nothing else in the folder (a ``fit``
that failed before its first checkpoint) removes the lock file too, while it still holds it
(``filelock`` retries a lock whose file was removed under it, so two processes never hold
two files), and the folders it created for the lock; otherwise the lock file stays and is
harmless. On a network filesystem without working ``flock``, ``filelock`` falls back to its
own scheme.

Within one process the lock is re-entrant (a ``fit`` that saves holds it once); the Python
API does not take it by itself: wrap your own writers in ``folder_lock(folder)``.

A benchmark folder is the exception: several ``contrasyn benchmark`` processes may fill one
folder (one per group of classes). They share it through ``shared_writes``, a second lock
(``FOLDER/.contrasyn.writes.lock``) that each holds only while it reads and rewrites the
folder's shared files (``results.jsonl``, the tables, ``environment.json``) and that waits
instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from contrasyn.errors import LockError

LOCK_NAME = ".contrasyn.api.lock"
HOLDER_NAME = ".contrasyn.api.lock.holder"
WRITES_LOCK_NAME = ".contrasyn.writes.lock"

_held: dict[str, list] = {}  # resolved folder -> [FileLock, depth]
_guard = threading.Lock()


def _holder_text(folder: Path) -> str:
    """Who holds ``folder``'s lock, from its sidecar, as words."""
    try:
        info = json.loads((folder / HOLDER_NAME).read_text())
        if not isinstance(info, dict):
            raise ValueError
    except (OSError, ValueError):
        return "holder unknown (it is starting, or is not contrasyn)"
    parts = [f"process {info.get('pid', '?')} on {info.get('host', '?')}"]
    if info.get("command"):
        parts.append(f"running `{info['command']}`")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return ", ".join(parts)


def _write_holder(folder: Path, command: str | None) -> None:
    from contrasyn.checkpoint import atomic_write

    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = json.dumps(info) + "\n"
    try:
        atomic_write(folder / HOLDER_NAME, lambda tmp: Path(tmp).write_text(text))
    except OSError:
        pass  # only informative (a full disk): the lock itself is held


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock (the folder is created if needed) for the ``with`` block.

    Raises ``LockError`` at once if another process holds it, naming the folder and the
    holder; ``command`` is what this process records as its own command line."""
    from filelock import FileLock, Timeout

    folder = Path(folder).expanduser()
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LockError(f"{folder}: cannot create the folder ({e.strerror or e})") from e
    key = str(folder.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:  # re-entered by this process
        try:
            yield folder
        finally:
            with _guard:
                entry[1] -= 1
        return
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockError(
            f"{folder} is in use by another contrasyn process ({_holder_text(folder)}); "
            "wait for it to finish, or choose another folder"
        ) from None
    except OSError as e:
        raise LockError(f"{folder / LOCK_NAME}: cannot lock ({e.strerror or e})") from e
    entry = [lock, 1]
    with _guard:
        _held[key] = entry
    try:
        _write_holder(folder, command)
        yield folder
    finally:
        with _guard:
            del _held[key]
        (folder / HOLDER_NAME).unlink(missing_ok=True)
        _tidy(folder, made)
        lock.release()


def _tidy(folder: Path, made: list[Path]) -> None:
    """What a writer that wrote nothing leaves (a fit that failed early): its lock file, when
    nothing else is in ``folder``, and the folders it created for the lock (``made``),
    with the empty folders it made inside them; never anything that holds a file."""
    if made:
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()  # only empty ones go
    try:
        if any(p.name != LOCK_NAME for p in folder.iterdir()):
            return
        (folder / LOCK_NAME).unlink(missing_ok=True)
        for path in made:
            path.rmdir()
    except OSError:
        return  # best effort: what is left is harmless


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return str(Path(folder).expanduser().resolve()) in _held


@contextlib.contextmanager
def shared_writes(folder: str | Path, timeout: float = 600.0) -> Iterator[Path]:
    """Hold ``folder``'s shared-writes lock for a read-modify-write of its shared files.

    Waits up to ``timeout`` seconds for another process's turn to end (each turn is a few
    file writes), then raises ``LockError`` naming the lock file. Without it, two processes
    that read ``environment.json`` at the same moment and each write back their own entry
    lose one of them."""
    from filelock import FileLock, Timeout

    folder = Path(folder).expanduser()
    lock = FileLock(str(folder / WRITES_LOCK_NAME), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise LockError(
            f"{folder / WRITES_LOCK_NAME}: still held by another process after "
            f"{timeout:.0f} s (a turn takes milliseconds: is a process stuck writing here?)"
        ) from None
    except OSError as e:
        raise LockError(f"{folder / WRITES_LOCK_NAME}: cannot lock ({e.strerror or e})") from e
    try:
        yield folder
    finally:
        lock.release()
