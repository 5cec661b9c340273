"""Keeps a thread's alternate signal stack as it was across a call into a library that changes it.

Why (issue 32): OpenVINO's CPU plugin (``libopenvino_intel_cpu_plugin.so``, 2026.4) installs a fresh
alternate signal stack (``sigaltstack``, 11568 bytes, mmap'd) on the thread that first uses it, and
when the plugin is released it unmaps that stack and puts back the one it found. With two plugin
instances released out of order, or released on another thread, the thread is left with a registered
alternate stack that is no longer mapped. CPython installs every signal handler with ``SA_ONSTACK``
(since 3.10, bpo-43390), so the next SIGTERM or SIGINT delivered to that thread makes the kernel
write the signal frame into unmapped memory: a segmentation fault "inside kill()", before any Python
code runs. Measured with ``sigaltstack(NULL, &old)`` and ``/proc/self/maps`` around each OpenVINO
call (``python -m bisenetv2_ros.inference.signal_stack`` shows the thread's stack).

``kept_signal_stack()`` saves the calling thread's alternate stack and restores it afterwards, so the
plugin's stack is never the one registered; the plugin later "restores" the one saved, which is
still valid. Linux (glibc or musl) only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

LOGGER = logging.getLogger("bisenetv2_ros")


class _StackT(ctypes.Structure):
    """``stack_t`` of <signal.h> on Linux: ss_sp, ss_flags, ss_size."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "sigaltstack") else None
    except OSError:
        return None


_LIBC = _libc()


def current_signal_stack() -> tuple[int, int, int] | None:
    """(address, flags, size) of the calling thread's alternate signal stack; None where unknown."""
    if _LIBC is None:
        return None
    stack = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return int(stack.ss_sp or 0), int(stack.ss_flags), int(stack.ss_size)


def restore_signal_stack(saved: tuple[int, int, int] | None) -> bool:
    """Registers ``saved`` (from ``current_signal_stack``) again; True when something changed back."""
    if _LIBC is None or saved is None or current_signal_stack() == saved:
        return False
    address, flags, size = saved
    SS_DISABLE = 2  # noqa: N806 - the <signal.h> name
    stack = _StackT(address or None, flags & SS_DISABLE, size)
    if _LIBC.sigaltstack(ctypes.byref(stack), None) != 0:
        LOGGER.warning("could not restore the thread's alternate signal stack (errno %d)", ctypes.get_errno())
        return False
    return True


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """The calling thread's alternate signal stack is the same after the block as before it."""
    saved = current_signal_stack()
    try:
        yield
    finally:
        if restore_signal_stack(saved):
            LOGGER.debug("alternate signal stack restored after a library changed it")


if __name__ == "__main__":
    print(current_signal_stack())
