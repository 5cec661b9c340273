"""Atomic file writes: readers see the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens a temporary file beside ``path`` for binary writing; on success it is flushed, fsynced
    and renamed over ``path``, and the folder is fsynced so that the rename itself survives a power
    cut; on any error (Ctrl-C included) it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus umask),
        # so other users (a ROS node run as another user, an installed package) can read it.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows): the rename is all we can do
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the file itself is already synced
    finally:
        os.close(descriptor)


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path) as stream:
        stream.write(data)
    return Path(path)


def _current_umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
