"""Atomic file writes (readers see the old file or the complete new one, never a partial one), the one
form of a failed write (``WriteError``: the file and the operating system's reason), a file's SHA-256,
and the check that an input is a plain file: reading a FIFO blocks until a writer comes, a device
(/dev/zero, /dev/urandom) never ends."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

# Temporary names beside a target keep at most this much of its name: a target whose name is
# valid (up to 255 bytes) must not fail only because its temporary name is longer.
_TEMP_STEM = 64


# errnos that mean "this file cannot be written here", whoever raised them (not a network's or a device's)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.ENAMETOOLONG})


class WriteError(OSError):
    """A write that failed, as one line: ``cannot write PATH: <the OS's reason>``.

    An OSError with the original ``errno`` (so callers can still tell "no space" from "permission"),
    ``filename`` the file the user asked for (not a temporary name), and ``what`` (a flag such as
    ``--output``, or words such as "the run folder") naming what chose it.
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None, what: str | None = None):
        super().__init__(code, reason, os.fspath(path))
        self.what = what

    def __str__(self) -> str:
        named = f"{self.what} {self.filename}" if self.what else self.filename
        return f"cannot write {named}: {self.strerror}"

    def __reduce__(self):  # picklable across processes (DataLoader workers, multiprocessing)
        return (WriteError, (self.filename, self.strerror, self.errno, self.what))


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError that ``error`` is or was raised from (its ``__cause__`` / ``__context__`` chain):
    libraries that write through Python streams (torch.save, onnx, rosbags) re-raise a failed
    ``write()`` as their own error, and the OS's reason is only in the chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_error(error: BaseException, path: str | os.PathLike, what: str | None = None) -> WriteError | None:
    """``error`` as the WriteError of writing ``path`` (an existing WriteError is kept as it is), or
    None when no OSError caused it (then it is not a failed write: a bug or a refusal, left alone)."""
    if isinstance(error, WriteError):
        return error
    cause = os_error_in(error)
    if cause is None:
        return None
    reason = cause.strerror or str(cause)
    if cause.errno == errno.EEXIST and cause.filename is not None and not os.path.isdir(cause.filename):
        reason = f"{cause.filename} is a file, where a folder is needed"  # mkdir's bare "File exists"
    return WriteError(path, reason, cause.errno, what)


@contextmanager
def writing(path: str | os.PathLike, what: str | None = None) -> Iterator[None]:
    """Inside it, a write failing for an OS reason (also one re-raised by a library) becomes the
    one-line ``WriteError`` naming ``path`` (and ``what`` chose it) and the reason."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised unchanged unless an OSError caused it
        failed = write_error(error, path, what)
        if failed is None or failed is error:
            raise
        raise failed from error


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens a temporary file beside ``path`` for binary writing; on success it is flushed, fsynced
    and renamed over ``path``, and the folder is fsynced so that the rename itself survives a power
    cut; on any error (Ctrl-C included) it is removed and ``path`` is untouched."""
    path = Path(path)
    with writing(path):  # a folder that cannot be made, or no temporary file beside the target
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:_TEMP_STEM]}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus umask),
        # so other users (a ROS node run as another user, an installed package) can read it.
        with writing(path):
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


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_file_kind(path: str | os.PathLike) -> str | None:
    """'a FIFO (named pipe)', 'a character device', ... when ``path`` is one (links followed), else None
    (a regular file, a folder, or nothing there)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), None)


def special_file_problem(path: str | os.PathLike, what: str = "input") -> str | None:
    """The one-line refusal of a special file given as ``what``, or None for anything else."""
    kind = special_file_kind(path)
    if kind is None:
        return None
    return f"{what} {path} is {kind}, not a regular file; reading it could block or never end: give a file"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
