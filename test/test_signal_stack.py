"""SIGTERM after OpenVINO (issue 32, rule 6): its CPU plugin swapped the thread's alternate signal
stack and left it pointing at unmapped memory; CPython's handlers run on that stack (SA_ONSTACK), so
the next SIGTERM crashed the process. ``signal_stack.kept_signal_stack`` and one shared Core fix it."""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bisenetv2_ros.inference import signal_stack
from bisenetv2_ros.inference.backend_base import openvino_importable

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(signal_stack.current_signal_stack() is None, reason="sigaltstack is Linux-only here")


def mapped(address: int) -> bool:
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(v, 16) for v in line.split()[0].split("-"))
        if low <= address < high:
            return True
    return False


def stack_is_safe() -> bool:
    """No alternate stack, or one that is mapped: a signal can be delivered to this thread."""
    address, flags, _ = signal_stack.current_signal_stack()
    return bool(flags & 2) or mapped(address)


@linux_only
def test_a_library_that_swaps_the_signal_stack_is_undone():
    before = signal_stack.current_signal_stack()
    region = mmap.mmap(-1, 16384)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    with signal_stack.kept_signal_stack():
        stack = signal_stack._StackT(address, 0, 16384)
        assert signal_stack._LIBC.sigaltstack(ctypes.byref(stack), None) == 0  # what the CPU plugin does
        assert signal_stack.current_signal_stack() == (address, 0, 16384)
    assert signal_stack.current_signal_stack() == before


@linux_only
@pytest.mark.skipif(not openvino_importable(), reason="the openvino extra is not installed")
def test_openvino_leaves_every_thread_able_to_take_a_signal(tiny_weights, tmp_path):
    """Backends built and released in any order, on any thread: the stacks stay valid."""
    import gc

    import numpy as np

    from bisenetv2_ros.inference.segmenter import Segmenter

    frames = np.zeros((1, 64, 96, 3), np.uint8)
    first = Segmenter(tiny_weights, backend="openvino", device="cpu", engine_cache_dir=tmp_path / "a")
    second = Segmenter(tiny_weights, backend="openvino", device="cpu", engine_cache_dir=tmp_path / "b")
    assert first.segment_batch(frames).shape == second.segment_batch(frames).shape == (1, 64, 96)
    del first
    gc.collect()
    assert stack_is_safe()
    results = []

    def on_another_thread():
        nonlocal second
        third = Segmenter(tiny_weights, backend="openvino", device="cpu", engine_cache_dir=tmp_path / "c")
        third.segment_batch(frames)
        second = third = None
        gc.collect()
        results.append(stack_is_safe())

    worker = threading.Thread(target=on_another_thread)
    worker.start()
    worker.join()
    assert results == [True] and stack_is_safe()


@pytest.mark.skipif(not openvino_importable(), reason="the openvino extra is not installed")
def test_sigterm_after_openvino_stops_the_cli_cleanly(tiny_weights, tmp_path):
    """The case that crashed: OpenVINO models built and released, then SIGTERM to the process."""
    script = textwrap.dedent(f"""
        import gc, os, signal, sys, time
        import numpy as np
        from bisenetv2_ros.cli.arguments import guarded
        from bisenetv2_ros.inference.segmenter import Segmenter

        frames = np.zeros((1, 64, 96, 3), np.uint8)
        for name in ("a", "b"):
            globals()[name] = Segmenter({str(tiny_weights)!r}, backend="openvino", device="cpu",
                                        engine_cache_dir={str(tmp_path)!r} + "/" + name)
            globals()[name].segment_batch(frames)
        del a; gc.collect()
        del b; gc.collect()

        def run():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

        sys.exit(guarded("probe", run))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 143, (result.returncode, result.stderr[-2000:])
    assert "probe: terminated; nothing was written" in result.stderr
