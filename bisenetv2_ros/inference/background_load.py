"""Competing busy processes, started and always stopped, to measure inference the way a robot runs it.

A robot's CPU is never quiet (drivers, localisation, planning share it); ``BackgroundLoad(n)`` starts
``n`` processes that each keep one core busy, for the ``with`` block only. They are killed on leaving
the block, on an exception, at interpreter exit and when the parent dies (Linux: a parent-death
signal), so no busy process ever outlives a benchmark or a measurement.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import sys
import time

LOGGER = logging.getLogger("bisenetv2_ros")
# The busy loop; on Linux it first asks for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG = 1),
# so a parent killed with SIGKILL leaves nothing behind either.
BUSY_LOOP = ("import ctypes, signal, sys\n"
             "try:\n"
             "    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))\n"
             "except Exception:\n"
             "    pass\n"
             "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
             "while True:\n"
             "    pass\n")
_RUNNING: set[subprocess.Popen] = set()


def _stop(processes) -> None:
    for process in list(processes):
        if process.poll() is None:
            process.kill()
        process.wait()
        _RUNNING.discard(process)


atexit.register(lambda: _stop(_RUNNING))


class BackgroundLoad:
    """``with BackgroundLoad(n):`` n busy processes run (each one core); n = 0 does nothing."""

    def __init__(self, processes: int) -> None:
        if int(processes) < 0:
            raise ValueError(f"background load must be 0 or more busy processes, got {processes}")
        self.count = int(processes)
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> BackgroundLoad:
        try:
            for _ in range(self.count):
                process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                self.processes.append(process)
                _RUNNING.add(process)
            for process in self.processes:  # running (past interpreter start-up) before timing begins
                process.stdout.readline()
            if self.processes:
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        _stop(self.processes)
        for process in self.processes:
            if process.stdout is not None:
                process.stdout.close()
        self.processes = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]
