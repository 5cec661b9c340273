"""StopSignals (ROS-free): SIGINT/SIGTERM set a stop flag, repeats never raise, cleanup runs to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bisenetv2_ros.ros.stop_signals import StopSignals

ROOT = Path(__file__).resolve().parents[1]


def test_signals_set_the_flag_and_repeats_are_counted():
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert stop.wait(2.0)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 2.0
        while len(stop.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.received == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]


def test_restore_puts_the_previous_handlers_back():
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    stop = StopSignals().install()
    assert signal.getsignal(signal.SIGINT) == stop._handle
    stop.restore()
    assert {number: signal.getsignal(number) for number in before} == before


# A process shaped like the node's main(): a worker thread, a stop loop, then a cleanup that takes a
# while (joins the worker, notify_all on its condition) - where a second Ctrl-C used to land.
_PROCESS = textwrap.dedent("""
    import sys, threading, time
    from bisenetv2_ros.ros.frame_worker import FrameSlots, FrameWorker
    from bisenetv2_ros.ros.stop_signals import StopSignals

    stop = StopSignals().install()
    slots = FrameSlots()
    worker = FrameWorker(slots, lambda batch: time.sleep(0.6)).start()
    slots.put(0, "frame")
    print("ready", flush=True)
    while not stop.requested:
        stop.wait(0.1)
    print("cleanup", flush=True)
    worker.stop()          # waits for the 0.6 s frame: the second signal arrives in here
    print("stopped", len(stop.received), flush=True)
""")


def _line(process: subprocess.Popen, timeout: float = 30.0) -> str:
    """The child's next stdout line, or a failure after ``timeout`` (a hung child must not hang the suite)."""
    import select

    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output from the child within {timeout} s (hung?)"
    return process.stdout.readline().strip()


# One signal alone is covered by the node process tests (test_node_process.py).
@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT, signal.SIGTERM)])
def test_repeated_signals_end_the_process_cleanly(signals):
    process = subprocess.Popen([sys.executable, "-c", _PROCESS], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert _line(process) == "ready"
        time.sleep(0.1)  # the worker is inside its 0.6 s frame
        process.send_signal(signals[0])
        assert _line(process) == "cleanup"
        for number in signals[1:]:
            process.send_signal(number)
            time.sleep(0.05)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert out.strip() == f"stopped {len(signals)}"


def test_exit_without_finalizing_keeps_status_and_output():
    code = ("import sys; from bisenetv2_ros.ros.stop_signals import exit_without_finalizing\n"
            "print('stdout line'); print('stderr line', file=sys.stderr)\n"
            "import atexit; atexit.register(print, 'finalized')\n"
            "exit_without_finalizing(3)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert result.stdout == "stdout line\n" and result.stderr == "stderr line\n"  # flushed; no atexit


# A timer signal every 2 ms while the main thread loops in wait(): some land while wait() is inside
# its own code. With a handler that took a lock (Event.set() against the main thread's Event.wait())
# this never finished (a hang, or RecursionError as handlers piled up on the held lock).
_SIGNAL_STORM = textwrap.dedent("""
    import signal, time
    from bisenetv2_ros.ros.stop_signals import StopSignals

    stop = StopSignals(signals=(signal.SIGALRM,)).install()
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        stop.wait(0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    stop.restore()
    print("done", len(stop.received) > 50, flush=True)
""")


def test_a_signal_landing_inside_wait_never_deadlocks():
    result = subprocess.run([sys.executable, "-c", _SIGNAL_STORM], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "done True"
    assert "RecursionError" not in result.stderr


def test_wait_returns_at_its_timeout_and_at_once_when_stopped():
    stop = StopSignals()
    started = time.monotonic()
    assert stop.wait(0.05) is False and time.monotonic() - started >= 0.05
    stop._handle(signal.SIGTERM, None)
    assert stop.wait() is True and stop.wait(0) is True and stop.received == [signal.SIGTERM]
