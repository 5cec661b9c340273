"""SIGINT and SIGTERM as one stop request that a repeated signal cannot turn into a traceback (ROS-free).

Ctrl-C where `ros2 launch` runs delivers SIGINT to the node twice: the terminal sends it to the whole
process group and launch forwards its own. With Python's default handler the second one raises
``KeyboardInterrupt`` wherever the main thread happens to be, often inside the node's cleanup
(joining the worker thread), which then dies with a traceback and exit code -2. Here every signal
only sets a flag: the main loop polls it, ends, and cleans up uninterrupted; repeats are counted.

The handler takes no lock. It runs in the main thread between two bytecodes, possibly while that
thread holds a lock itself: an ``Event.set()`` here deadlocked when the signal landed inside the main
loop's own ``Event.wait()`` (the Event's condition lock is not reentrant). So ``wait`` polls a plain
flag in short sleeps instead.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import Any, Iterable, NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.02  # how long ``wait`` sleeps between looks at the flag


class StopSignals:
    """Installs handlers (main thread only) that record stop signals instead of raising.

    ``requested`` turns true at the first signal; ``received`` lists every signal number seen.
    ``restore()`` puts the previous handlers back (tests); a node process keeps these handlers
    until it exits, so a signal arriving during interpreter shutdown is harmless too.
    """

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: list[int] = []
        self._requested = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._requested

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until a stop was requested (or ``timeout``); True when it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._requested:
            left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self._requested

    def install(self) -> "StopSignals":
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes: only record, never raise.
        self.received.append(number)
        self._requested = True

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()


def exit_without_finalizing(status: int) -> NoReturn:
    """Ends the process with ``status`` once its own cleanup is done, skipping Python's finalization.

    Unloading torch at interpreter exit alone took 2.5 s on a loaded 2-core machine (``python -c
    "import torch"``), longer than a stopping node should take; everything the node owns is already
    closed by then, so only the standard streams are flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    os._exit(status)
