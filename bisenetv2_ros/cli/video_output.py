"""A video file written through OpenCV that reports why a write failed.

``cv2.VideoWriter`` says nothing: a file it cannot create is only ``isOpened() == False``, and a
frame its FFmpeg backend cannot write (disk full, the file's device gone) is dropped with a log
line, leaving a truncated video that no player opens. ``VideoOutput`` turns each of these into a
``fileio.WriteError`` (``cannot write out/color.mp4: No space left on device``):

- before OpenCV opens the file, the target is created by Python, so a missing folder, no permission,
  a read-only file system or a name too long comes with the OS's reason;
- while writing, the free space of the target's file system is checked every ``CHECK_EVERY`` frames,
  so a disk that fills stops the run then, not at the end;
- on ``close()`` the file is read back: it must open and hold every frame written. When it does not,
  one block is appended to it and synced, and that write's error is the reason (ENOSPC on a full
  disk); when even that succeeds, the reason says what OpenCV left.

A failed or abandoned video is removed (``discard``); nothing half-written keeps the final name.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import cv2
import numpy as np

from ..fileio import WriteError, writing

CHECK_EVERY = 16  # frames between free-space checks (a statvfs call each)
LOW_SPACE = 64 * 1024  # bytes: below this FFmpeg's next buffered write (32 KiB) is likely to fail
PROBE_BLOCK = 64 * 1024  # bytes appended to a failed video to learn the OS's reason


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes this process may still write on ``folder``'s file system (root may use the reserved
    blocks), or None when the platform cannot tell."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    blocks = stats.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else stats.f_bavail
    return blocks * stats.f_frsize


class VideoOutput:
    """``path`` written with ``fourcc`` at ``fps``, frames of ``size`` (height, width), BGR uint8."""

    def __init__(self, path: str | os.PathLike, fourcc: str, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.frames = 0
        with writing(self.path):
            # created by Python first: OpenCV would only answer "not opened" (no errno)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        height, width = size
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not self._writer.isOpened():  # FFmpeg writes the container's header here: the disk may be why
            code, reason = self._os_reason() or (errno.EINVAL, f"OpenCV cannot encode {fourcc} video into it (no "
                                                               "FFmpeg encoder for this container in this OpenCV build)")
            self.discard()
            raise WriteError(self.path, reason, code)

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)
        self.frames += 1
        if self.frames % CHECK_EVERY == 0:
            free = free_bytes(self.path.parent)
            if free is not None and free < LOW_SPACE:
                raise WriteError(self.path, os.strerror(errno.ENOSPC), errno.ENOSPC)

    def close(self) -> Path:
        """Finishes the file and checks it reads back with every frame; raises WriteError otherwise
        (the file is removed then)."""
        if self._writer is None:
            return self.path
        self._writer.release()
        self._writer = None
        read_back = self._frames_read_back()
        if read_back != self.frames:
            code, reason = self._reason_for_missing(read_back)
            self.discard()
            raise WriteError(self.path, reason, code)
        return self.path

    def discard(self) -> None:
        """Stops writing and removes the file (a partial video misleads: players show its first part)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is going (a staged output) or cannot be written: nothing more to do

    def _frames_read_back(self) -> int | None:
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                return None
            return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        finally:
            capture.release()

    def _os_reason(self) -> tuple[int, str] | None:
        """(errno, reason) of the write OpenCV's FFmpeg failed, made again by Python (a block appended
        and synced; the file is discarded anyway), or of a full file system; None when nothing fails."""
        try:
            with open(self.path, "ab") as stream:
                stream.write(bytes(PROBE_BLOCK))
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            return error.errno or errno.EIO, error.strerror or str(error)
        free = free_bytes(self.path.parent)
        if free is not None and free < LOW_SPACE:
            return errno.ENOSPC, os.strerror(errno.ENOSPC)
        return None

    def _reason_for_missing(self, read_back: int | None) -> tuple[int, str]:
        found_reason = self._os_reason()
        if found_reason is not None:
            return found_reason
        found = "does not open as a video" if read_back is None else f"reads back with {read_back}"
        return errno.EIO, f"OpenCV's video writer lost frames: {self.frames} written, the file {found}"

    def __enter__(self) -> "VideoOutput":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.discard()
        return False
