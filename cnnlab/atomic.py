"""The one atomic file writer: every file cnnlab writes (checkpoints, ``config.json``, ``metrics.csv``,
cache entries) goes through :func:`write_atomic`.

The bytes go to a new temporary file ``.RANDOM.NAME.tmpPID`` in the target's folder, created by
:func:`tempfile.mkstemp` (``O_CREAT | O_EXCL | O_NOFOLLOW``: it never opens an existing file or
follows a planted symlink, and its name cannot be guessed in advance), then are flushed and fsynced,
and the file is renamed over the target with :func:`os.replace` (which replaces a symlink at the
target itself, never the file it points to) and the folder is fsynced. A crash at any moment leaves
the old file or the new one, never half of one; a failed write removes the temporary file and leaves
the old file as it was. The process id in the name lets a later run tell a dead writer's leftovers
from a live writer's file (:func:`cnnlab.checkpoint.remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], object]


def temporary_suffix(name: str, pid: int | None = None) -> str:
    """The end of the temporary file's name for a target called ``name``: ``.NAME.tmpPID``."""
    return f".{name}.tmp{os.getpid() if pid is None else pid}"


def write_atomic(path: str | Path, data: bytes | Writer) -> None:
    """Replace ``path`` by ``data`` (bytes, or a function that writes into a binary file) atomically.

    Raises the ``OSError`` of a failed write (disk full, folder gone) after removing the temporary file.
    """
    path = Path(path)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(Path(tmp))
        raise
    fsync_dir(path.parent)


def create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside ``path``, opened for writing: ``(fd, its path)``."""
    return tempfile.mkstemp(dir=path.parent, prefix=".", suffix=temporary_suffix(path.name))


def check_writable(folder: str | Path, size: int = 4096) -> None:
    """Prove ``folder`` takes a file of ``size`` bytes: write one (made by mkstemp) and remove it.

    Raises the ``OSError`` that says why not."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"x" * size)
            f.flush()
            os.fsync(f.fileno())
    finally:
        _remove(Path(probe))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # gone already, or the folder went away: nothing left to clean
        pass
