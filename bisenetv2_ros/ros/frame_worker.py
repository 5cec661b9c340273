"""Frames on their way to the network: a newest-frame slot per camera, its intake and the worker thread.

Subscription callbacks hand each message to ``FrameIntake``, which counts it and stores it in its
camera's slot (``FrameSlots``), replacing a frame not yet taken; ``FrameWorker`` takes what is
pending, one batch at a time, on its own thread.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # type hints only: the pipeline module imports this one
    from .parameters import NodeSettings
    from .stats import CameraState


class FrameSlots:
    """One newest-frame slot per camera, shared by one worker.

    ``put`` replaces a camera's unprocessed frame (a stale drop), so the worker always gets each
    camera's newest frame and memory stays constant when cameras outpace the model. ``take`` hands
    over every pending frame at once (at most ``max_items()``), cameras in round-robin order starting
    after the last one served: when the worker is behind and a batch is capped, every camera gets its
    turn and none can starve another.
    """

    def __init__(self, count: int = 1, max_items: Callable[[], int] = lambda: 0) -> None:
        if count < 1:
            raise ValueError(f"need at least one camera slot, got {count}")
        self._condition = threading.Condition()
        self._items: list[Any] = [None] * count
        self._has_item = [False] * count
        self._next = 0  # the camera served first by the next take
        self._closed = False
        self._max_items = max_items
        self.replaced = [0] * count

    def __len__(self) -> int:
        return len(self._items)

    def put(self, index: int, item: Any) -> bool:
        """Stores camera ``index``'s newest ``item``; True when it replaced one not yet taken."""
        with self._condition:
            replaced = self._has_item[index]
            self._items[index], self._has_item[index] = item, True
            if replaced:
                self.replaced[index] += 1
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> list[tuple[int, Any]] | None:
        """The pending (camera index, item) pairs, removed; None after ``timeout`` seconds or once closed."""
        with self._condition:
            if not any(self._has_item) and not self._closed:
                self._condition.wait(timeout)
            count = len(self._items)
            order = [(self._next + offset) % count for offset in range(count)]
            ready = [index for index in order if self._has_item[index]]
            if not ready:
                return None
            limit = self._max_items()
            if limit > 0:
                ready = ready[:limit]
            taken = []
            for index in ready:
                taken.append((index, self._items[index]))
                self._items[index], self._has_item[index] = None, False
            self._next = (ready[-1] + 1) % count
            return taken

    @property
    def pending(self) -> int:
        """How many cameras have a frame waiting."""
        with self._condition:
            return sum(self._has_item)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._items = [None] * len(self._items)
            self._has_item = [False] * len(self._items)
            self._condition.notify_all()


class FrameWorker:
    """One thread that runs ``process(batch)`` on what ``slots.take`` hands over (the newest frame
    of each camera that has one).

    ``min_interval_s()`` (re-read every batch, so `max_rate_hz` can change at runtime) spaces the
    starts of consecutive batches; frames arriving meanwhile replace each other in their slots.
    ``on_error(exception)`` is called when ``process`` raises; the worker keeps going.
    """

    def __init__(self, slots: FrameSlots, process: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None = None,
                 min_interval_s: Callable[[], float] = lambda: 0.0, name: str = "segmentation-worker") -> None:
        self._slots = slots
        self._process = process
        self._on_error = on_error
        self._min_interval_s = min_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._last_start = -math.inf

    def start(self) -> "FrameWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stops after the current frame; True when the thread ended within ``timeout``."""
        self._stop.set()
        self._slots.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self._last_start + self._min_interval_s() - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 0.1))  # re-check: the rate may change or we may be stopped
                continue
            item = self._slots.take(timeout=0.1)
            if item is None:
                continue
            self._last_start = time.monotonic()
            try:
                self._process(item)
            except Exception as error:  # noqa: BLE001 - one bad frame must not end the node
                if self._on_error is not None:
                    self._on_error(error)


def min_interval_for_rate(max_rate_hz: float) -> float:
    return 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0


@dataclass
class FrameItem:
    """What the subscription callback stores: the message, its arrival time and its transport."""

    msg: Any
    arrival: float  # time.monotonic() at the callback
    compressed: bool = False


class FrameIntake:
    """What a subscription callback does, and all it does: count, maybe skip, store the newest."""

    def __init__(self, slots: FrameSlots, cameras: list[CameraState], settings: NodeSettings,
                 anyone_listening: Callable[[int], bool] = lambda camera: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(slots) != len(cameras):
            raise ValueError(f"{len(slots)} slots for {len(cameras)} cameras")
        self.slots, self.cameras, self.settings = slots, cameras, settings
        self.anyone_listening = anyone_listening
        self.clock = clock

    def offer(self, msg: Any, compressed: bool = False, camera: int = 0) -> str:
        """'stored', 'replaced' (the camera's unprocessed frame was dropped as stale) or 'skipped'
        (no one subscribes to this camera's outputs and `only_when_subscribed` is on)."""
        stats = self.cameras[camera].stats
        stats.record_received()
        if self.settings.only_when_subscribed and not self.anyone_listening(camera):
            stats.record_skipped()
            return "skipped"
        if self.slots.put(camera, FrameItem(msg, self.clock(), compressed)):
            stats.record_stale_drop()
            return "replaced"
        return "stored"

