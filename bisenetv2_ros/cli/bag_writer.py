"""A rosbags ``Writer`` whose failures name the bag and the operating system's reason.

rosbags writes MCAP through Python files (a failed write is an OSError without the bag's name) and
sqlite3 through the sqlite3 module (a full disk is ``sqlite3.OperationalError: database or disk is
full``, no OSError at all). ``CheckedBagWriter`` wraps each call of the writer it is given and turns
both into ``fileio.WriteError``: ``cannot write out_bag: No space left on device``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..fileio import WriteError, writing

# sqlite3's result codes (sqlite3.h) that are an operating system's reason, as errno
SQLITE_ERRNOS = {13: errno.ENOSPC,  # SQLITE_FULL
                 8: errno.EROFS,  # SQLITE_READONLY
                 10: errno.EIO,  # SQLITE_IOERR
                 14: errno.EACCES}  # SQLITE_CANTOPEN (also a missing folder; sqlite's own words are kept)


class CheckedBagWriter:
    """``writer`` (a rosbags Writer for ``path``, not yet opened) used as a context manager."""

    def __init__(self, writer: Any, path: str | os.PathLike) -> None:
        self._writer, self.path = writer, Path(path)

    @contextmanager
    def _checked(self) -> Iterator[None]:
        try:
            with writing(self.path):
                yield
        except sqlite3.Error as error:
            code = SQLITE_ERRNOS.get(getattr(error, "sqlite_errorcode", None) or 0)
            reason = os.strerror(code) if code in (errno.ENOSPC, errno.EROFS) else f"sqlite3: {error}"
            raise WriteError(self.path, reason, code or errno.EIO) from error

    def add_connection(self, *args, **kwargs) -> Any:
        with self._checked():
            return self._writer.add_connection(*args, **kwargs)

    def write(self, *args, **kwargs) -> None:
        with self._checked():
            self._writer.write(*args, **kwargs)

    def __enter__(self) -> "CheckedBagWriter":
        with self._checked():
            self._writer.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        with self._checked():  # closing writes the index and metadata.yaml: a full disk shows here too
            return bool(self._writer.__exit__(*exc))
